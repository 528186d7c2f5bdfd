// A model's chat template (`chat_template` in tokenizer_config.json, `tokenizer.chat_template` in GGUF),
// rendered like transformers' `apply_chat_template(..., tokenize=False)`: the Jinja interpreter in
// Text/Jinja with jinja2's settings as transformers configures them (trim_blocks, lstrip_blocks, its
// tojson, raise_exception, strftime_now, namespace, break/continue).

/// One message of a conversation.
public struct ChatMessage: Equatable {
    public var role: String
    public var content: String

    public init(role: String, content: String) {
        self.role = role
        self.content = content
    }
}

/// A parsed chat template.
public struct ChatTemplate {
    /// The template text.
    public let source: String
    /// Bounds on one rendering (output size, loop iterations, value sizes).
    public var limits = JinjaLimits()
    /// The clock `strftime_now` reads (the current local time unless a test fixes it).
    public var clock: () -> JinjaDateTime = { JinjaDateTime.now() }

    private let program: [JinjaNode]

    /// Parses `source`. Syntax errors and unsupported constructs (unknown filters and tests, macros,
    /// includes, ...) are `DPOError.format` naming the construct and its line:column.
    public init(source: String) throws {
        self.source = source
        do {
            var lexer = JinjaLexer(source)
            var parser = JinjaParser(tokens: try lexer.tokenize())
            program = try parser.parseTemplate(JinjaBuiltins.self)
        } catch let e as JinjaSyntaxError {
            throw DPOError.format("chat template syntax error at \(e.position): \(e.message)")
        }
    }

    /// Whether the template has a `{% generation %}` block (TRL's `has_generation_markers`): only
    /// then can it mark the assistant's tokens for `assistant_only_loss`.
    public var hasGenerationBlocks: Bool {
        func search(_ nodes: [JinjaNode]) -> Bool {
            nodes.contains { node in
                switch node {
                case .generation: return true
                case .ifBlock(let branches, let elseBody): return branches.contains { search($0.1) } || search(elseBody)
                case .forLoop(let loop): return search(loop.body) || search(loop.elseBody)
                case .setBlock(_, _, let body, _): return search(body)
                case .text, .output, .set, .loopControl: return false
                }
            }
        }
        return search(program)
    }

    /// Renders a conversation as `apply_chat_template(messages, tokenize=False, add_generation_prompt=...)`
    /// does: `messages` (role and content), `add_generation_prompt`, `tools` and `documents` as None,
    /// and the special tokens that are given. `extra` adds or replaces variables (e.g. `tools`,
    /// `date_string`, or `messages` with tool calls made by `ChatTemplate.messages(json:)`).
    public func render(messages: [ChatMessage], addGenerationPrompt: Bool = false,
                       bosToken: String? = nil, eosToken: String? = nil,
                       extra: [String: JinjaValue] = [:]) throws -> String {
        var context: [String: JinjaValue] = [
            "messages": .list(messages.map { .dict(JinjaDict([("role", .string($0.role)), ("content", .string($0.content))])) }),
            "add_generation_prompt": .bool(addGenerationPrompt),
            "tools": .none,
            "documents": .none,
        ]
        if let bosToken { context["bos_token"] = .string(bosToken) }
        if let eosToken { context["eos_token"] = .string(eosToken) }
        for (k, v) in extra { context[k] = v }
        return try render(context: context)
    }

    /// Renders the template with exactly these variables (plus the global functions). A template that
    /// calls `raise_exception(message)` fails with `DPOError.invalidArgument` carrying the message; other
    /// evaluation errors name their line:column; exceeding `limits` is an error, never a cut output.
    public func render(context: [String: JinjaValue]) throws -> String {
        try renderTracked(context: context).text
    }

    /// `render(context:)` that also says where the output of each `{% generation %}` block went:
    /// UTF-8 byte ranges of `text`, in the order the blocks finished (transformers'
    /// `generation_indices` behind `return_assistant_tokens_mask`, counted in bytes instead of
    /// characters).
    public func renderTracked(context: [String: JinjaValue]) throws -> (text: String, generationSpans: [Range<Int>]) {
        let evaluator = JinjaEvaluator(context: context, globals: JinjaGlobals.make(clock: clock, limits: limits), limits: limits)
        do {
            let text = try evaluator.render(program)
            return (text, evaluator.generationSpans)
        } catch let e as JinjaRaisedError {
            throw DPOError.invalidArgument("chat template raised an exception\(e.position.map { " at \($0)" } ?? ""): \(e.message)")
        } catch let e as JinjaRuntimeError {
            throw DPOError.invalidArgument("chat template error\(e.position.map { " at \($0)" } ?? ""): \(e.message)")
        }
    }

    /// Messages given as JSON (an array of objects, possibly with tool calls and other fields) as
    /// `apply_chat_template` hands them to the template: keys whose value is null are dropped, and a
    /// message with reasoning under `reasoning_content`, `thinking` or `reasoning` gets it under
    /// `thinking` (first) and `reasoning_content` (last) too.
    public static func messages(json: JSONValue) throws -> JinjaValue {
        guard case .array(let items) = json else { throw DPOError.invalidArgument("chat messages must be a JSON array") }
        var out: [JinjaValue] = []
        for (i, item) in items.enumerated() {
            guard case .object(let object) = item else { throw DPOError.invalidArgument("chat message \(i) is not a JSON object") }
            var message = JinjaDict()
            for key in object.keys {
                if let value = object[key], !value.isNull { message[key] = JinjaValue(value) }
            }
            if let reasoning = ["reasoning_content", "thinking", "reasoning"].lazy.compactMap({ message[$0] }).first {
                var aliased = JinjaDict([("thinking", reasoning)])
                for (k, v) in message.pairs { aliased[k] = v }  // a "thinking" key keeps the first place
                aliased["reasoning_content"] = reasoning
                message = aliased
            }
            out.append(.dict(message))
        }
        return .list(out)
    }
}
