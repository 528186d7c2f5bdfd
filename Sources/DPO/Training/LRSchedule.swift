#if canImport(Glibc)
import Glibc
#endif

extension OptimizerConfig {
    /// Warmup length in optimizer steps: `warmup_steps` if set, else ceil(warmup_ratio * max_steps).
    public var resolvedWarmupSteps: Int {
        warmupSteps > 0 ? warmupSteps : Int((warmupRatio * Double(maxSteps)).rounded(.up))
    }

    /// The learning rate of the optimizer step that follows `completedSteps` steps, as transformers'
    /// schedulers compute it (`get_*_schedule_with_warmup`, the LambdaLR multiplier times the base).
    public func learningRate(afterSteps completedSteps: Int) -> Double {
        let step = Double(completedSteps), warmup = Double(resolvedWarmupSteps), total = Double(maxSteps)
        let warm = completedSteps < resolvedWarmupSteps
        let factor: Double
        switch lrSchedulerType {
        case .constant:
            factor = 1
        case .constantWithWarmup:
            factor = warm ? step / max(1, warmup) : 1
        case .linear:
            factor = warm ? step / max(1, warmup) : max(0, (total - step) / max(1, total - warmup))
        case .cosine:
            // num_cycles = 0.5: a half cosine from the base rate to 0.
            let progress = (step - warmup) / max(1, total - warmup)
            factor = warm ? step / max(1, warmup) : max(0, 0.5 * (1 + cos(Double.pi * 0.5 * 2 * progress)))
        }
        return learningRate * factor
    }
}
