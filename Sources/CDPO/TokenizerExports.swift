import CDPOHeader
import DPO
#if canImport(Glibc)
import Glibc
#endif

// Tokenizer handles: load (a model directory's tokenizer.json or a GGUF file's metadata),
// encode, decode, the chat template, free.

final class TokenizerObject: HandleObject {
    override class var typeName: String { "dpo_tokenizer" }
    let tokenizer: Tokenizer
    init(_ tokenizer: Tokenizer) { self.tokenizer = tokenizer }
}

/// Text passed as (pointer, length): UTF-8 required (a tokenizer cannot encode other bytes
/// faithfully, and replacing them would silently change the text).
func readText(_ p: UnsafePointer<CChar>?, _ length: UInt, _ argument: String) throws -> String {
    if length == 0 { return "" }
    let p = try required(p, argument)
    guard length <= UInt(Tokenizer.maxTextBytes) else {
        throw APIError.invalid("\(argument)_length = \(length) exceeds the limit of \(Tokenizer.maxTextBytes) bytes")
    }
    let bytes = UnsafeRawBufferPointer(start: p, count: Int(length))
    guard let text = String(validating: bytes, as: UTF8.self) else {
        throw APIError.invalid("\(argument) is not valid UTF-8")
    }
    return text
}

/// A NUL-terminated string argument that must be UTF-8 (text that reaches a tokenizer).
func readUTF8String(_ p: UnsafePointer<CChar>?, _ argument: String) throws -> String {
    let p = try required(p, argument)
    return try readText(p, UInt(strlen(p)), argument)
}

/// A token id list argument: `count` ids, each checked against the tokenizer.
func readTokenIDs(_ p: UnsafePointer<Int32>?, _ count: Int64, _ argument: String) throws -> [Int32] {
    let n = try checkedInt(count, "count", 0...Int64(Int32.max))
    if n == 0 { return [] }
    let p = try required(p, argument)
    return Array(UnsafeBufferPointer(start: p, count: n))
}

@_cdecl("dpo_tokenizer_load")
public func dpo_tokenizer_load(_ path: UnsafePointer<CChar>?, _ outTokenizer: UnsafeMutablePointer<OpaquePointer?>?) -> dpo_status {
    exportCall("dpo_tokenizer_load") { _ in
        let out = try required(outTokenizer, "out_tokenizer")
        let tokenizer = try Tokenizer.load(path: try readPath(path, "path"))
        out.pointee = try Registry.register(TokenizerObject(tokenizer))
    }
}

@_cdecl("dpo_tokenizer_save_pretrained")
public func dpo_tokenizer_save_pretrained(_ tokenizer: OpaquePointer?, _ directory: UnsafePointer<CChar>?) -> dpo_status {
    exportCall("dpo_tokenizer_save_pretrained") { ctx in
        let t = try ctx.use(tokenizer, TokenizerObject.self, "tokenizer")
        try t.tokenizer.savePretrained(directory: try readPath(directory, "directory"))
    }
}

@_cdecl("dpo_tokenizer_free")
public func dpo_tokenizer_free(_ tokenizer: OpaquePointer?) -> dpo_status {
    exportCall("dpo_tokenizer_free") { _ in try Registry.remove(tokenizer, TokenizerObject.self, "tokenizer") }
}

@_cdecl("dpo_tokenizer_last_error")
public func dpo_tokenizer_last_error(_ tokenizer: OpaquePointer?) -> UnsafePointer<CChar>? {
    Registry.peek(tokenizer, TokenizerObject.self)?.message.pointer ?? StaticCString.get("invalid dpo_tokenizer handle")
}

@_cdecl("dpo_tokenizer_get_info")
public func dpo_tokenizer_get_info(_ tokenizer: OpaquePointer?, _ outInfo: UnsafeMutablePointer<dpo_tokenizer_info>?) -> dpo_status {
    exportCall("dpo_tokenizer_get_info") { ctx in
        let t = try ctx.use(tokenizer, TokenizerObject.self, "tokenizer").tokenizer
        let out = try outputStruct(outInfo, "out_info")
        var info = dpo_tokenizer_info()
        info.struct_size = MemoryLayout<dpo_tokenizer_info>.size
        info.vocab_size = Int64(t.idCount)
        info.bos_token_id = Int64(t.bosTokenID ?? -1)
        info.eos_token_id = Int64(t.eosTokenID ?? -1)
        info.pad_token_id = Int64(t.padTokenID ?? -1)
        info.has_chat_template = t.chatTemplate == nil ? 0 : 1
        out.pointee = info
    }
}

@_cdecl("dpo_tokenizer_encode")
public func dpo_tokenizer_encode(_ tokenizer: OpaquePointer?, _ text: UnsafePointer<CChar>?, _ textLength: UInt,
                                 _ addSpecialTokens: Int32, _ outIDs: UnsafeMutablePointer<Int32>?,
                                 _ capacity: Int64, _ outCount: UnsafeMutablePointer<Int64>?) -> dpo_status {
    exportCall("dpo_tokenizer_encode") { ctx in
        let t = try ctx.use(tokenizer, TokenizerObject.self, "tokenizer").tokenizer
        let s = try readText(text, textLength, "text")
        let special = try readFlag(addSpecialTokens, "add_special_tokens")
        if capacity < 0 { throw APIError.invalid("capacity = \(capacity) is negative") }
        let ids = t.encode(s, addSpecialTokens: special)
        try writeIDs(ids, outIDs, capacity, outCount)
    }
}

/// Copies token ids into a caller array, reporting the count through `outCount` also when the
/// array is too small (then nothing is written to it).
func writeIDs(_ ids: [Int32], _ out: UnsafeMutablePointer<Int32>?, _ capacity: Int64,
              _ outCount: UnsafeMutablePointer<Int64>?) throws {
    outCount?.pointee = Int64(ids.count)
    if Int64(ids.count) > capacity {
        throw APIError.tooSmall("capacity = \(capacity) is smaller than the \(ids.count) token ids")
    }
    if ids.isEmpty { return }
    let p = try required(out, "out_ids")
    for (i, id) in ids.enumerated() { p[i] = id }
}

@_cdecl("dpo_tokenizer_decode")
public func dpo_tokenizer_decode(_ tokenizer: OpaquePointer?, _ ids: UnsafePointer<Int32>?, _ count: Int64,
                                 _ skipSpecialTokens: Int32, _ buffer: UnsafeMutablePointer<CChar>?,
                                 _ capacity: UInt, _ outNeeded: UnsafeMutablePointer<UInt>?) -> dpo_status {
    exportCall("dpo_tokenizer_decode") { ctx in
        let t = try ctx.use(tokenizer, TokenizerObject.self, "tokenizer").tokenizer
        let list = try readTokenIDs(ids, count, "ids")
        let skip = try readFlag(skipSpecialTokens, "skip_special_tokens")
        try writeText(try t.decode(list, skipSpecialTokens: skip), buffer, capacity, outNeeded, "buffer")
    }
}

@_cdecl("dpo_tokenizer_apply_chat_template")
public func dpo_tokenizer_apply_chat_template(_ tokenizer: OpaquePointer?, _ messages: UnsafePointer<dpo_chat_message>?,
                                              _ count: Int64, _ addGenerationPrompt: Int32,
                                              _ buffer: UnsafeMutablePointer<CChar>?, _ capacity: UInt,
                                              _ outNeeded: UnsafeMutablePointer<UInt>?) -> dpo_status {
    exportCall("dpo_tokenizer_apply_chat_template") { ctx in
        let t = try ctx.use(tokenizer, TokenizerObject.self, "tokenizer").tokenizer
        let n = try checkedInt(count, "count", 0...1_000_000)
        var list: [ChatMessage] = []
        if n > 0 {
            let p = try required(messages, "messages")
            for i in 0..<n {
                let role = try readUTF8String(p[i].role, "messages[\(i)].role")
                let content = try readUTF8String(p[i].content, "messages[\(i)].content")
                list.append(ChatMessage(role: role, content: content))
            }
        }
        let generation = try readFlag(addGenerationPrompt, "add_generation_prompt")
        try writeText(try t.applyChatTemplate(list, addGenerationPrompt: generation), buffer, capacity, outNeeded, "buffer")
    }
}

@_cdecl("dpo_tokenizer_chat_template")
public func dpo_tokenizer_chat_template(_ tokenizer: OpaquePointer?, _ buffer: UnsafeMutablePointer<CChar>?,
                                        _ capacity: UInt, _ outNeeded: UnsafeMutablePointer<UInt>?) -> dpo_status {
    exportCall("dpo_tokenizer_chat_template") { ctx in
        let t = try ctx.use(tokenizer, TokenizerObject.self, "tokenizer").tokenizer
        guard let template = t.chatTemplate else { throw APIError.invalid("the tokenizer has no chat template") }
        try writeText(template, buffer, capacity, outNeeded, "buffer")
    }
}
