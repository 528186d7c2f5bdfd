/// swift-dpo's version: the same as include/dpo.h's DPO_VERSION_STRING and the Python package's
/// (a Swift test checks the three agree).
public let swiftDPOVersion = "0.2.0"
