// Which bytes of the text each token covers: what HF tokenizers reports as an encoding's
// `offsets`, and what transformers' `return_assistant_tokens_mask` compares with the template's
// generation spans.

extension Tokenizer {
    /// The bytes of text token `id` stands for: an added token's content, a byte-level token's
    /// bytes (ByteLevel.swift), a SentencePiece-style token with "▁" read as a space and `<0xXX>`
    /// as its byte. Nil for an id outside the vocabulary.
    func surfaceBytes(of id: Int32) -> [UInt8]? {
        if let added = addedTokens.first(where: { $0.id == id }) { return Array(added.content.utf8) }
        guard let token = token(for: id) else { return nil }
        if model.options.byteLevel { return ByteLevel.bytes(of: token) }
        if model.options.byteFallback, let byte = fallbackByte(token) { return [byte] }
        var out: [UInt8] = []
        for s in token.unicodeScalars {
            if s == "\u{2581}" { out.append(0x20) } else { out += Array(String(s).utf8) }
        }
        return out
    }

    /// `encode(text, addSpecialTokens: false)` and the UTF-8 byte range of `text` each token
    /// covers. The ranges come from the tokens' own bytes laid end to end, so they exist only when
    /// the tokens spell the text byte for byte: byte-level BPE (SmolLM2, Llama 3, Qwen2 on
    /// NFC text) with added tokens that strip no whitespace. A tokenizer whose normalizer or
    /// pre-tokenizer changes the text (SentencePiece's "▁" prefix) is an error saying so.
    public func encodeWithOffsets(_ text: String) throws -> (ids: [Int32], offsets: [Range<Int>]) {
        let ids = encode(text, addSpecialTokens: false)
        let bytes = Array(text.utf8)
        var offsets: [Range<Int>] = []
        offsets.reserveCapacity(ids.count)
        var cache: [Int32: [UInt8]] = [:]
        var at = 0
        for (k, id) in ids.enumerated() {
            guard let piece = cache[id] ?? surfaceBytes(of: id) else {
                throw DPOError.internal("token \(id) at position \(k) has no text")
            }
            cache[id] = piece
            guard at + piece.count <= bytes.count, bytes[at..<(at + piece.count)].elementsEqual(piece) else {
                throw DPOError.invalidArgument("token offsets are unavailable: the tokens of this tokenizer do not spell the text byte for byte (at byte \(at), token \(k) = \(id)); assistant masks need a byte-level BPE tokenizer")
            }
            offsets.append(at..<(at + piece.count))
            at += piece.count
        }
        guard at == bytes.count else {
            throw DPOError.invalidArgument("token offsets are unavailable: the tokens spell \(at) of the text's \(bytes.count) bytes")
        }
        return (ids, offsets)
    }
}
