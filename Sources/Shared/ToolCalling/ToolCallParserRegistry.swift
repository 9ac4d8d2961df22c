/// The tool-call parsers the gateway knows, by configuration name (`tool_parser`).
///
/// Built once at start-up; ``standard`` holds every family in this module, and the rest of
/// the gateway reaches the families only through it. Adding a family means one file with a
/// ``ScannedToolCallParser`` (its ``ToolCallSyntax``) and one entry in ``standard``.
public struct ToolCallParserRegistry: Sendable {
    private var parsers: [String: any ToolCallParser.Type]

    /// Every family in this module: `hermes`, `llama3_json`, `mistral`, `pythonic`, `none`.
    public static let standard = ToolCallParserRegistry([
        HermesToolCallParser.self,
        Llama3JSONToolCallParser.self,
        MistralToolCallParser.self,
        PythonicToolCallParser.self,
        NoToolCallParser.self,
    ])

    /// Creates a registry of `parsers`; a later parser with the same name replaces an earlier one.
    public init(_ parsers: [any ToolCallParser.Type]) {
        self.parsers = [:]
        for parser in parsers { register(parser) }
    }

    /// The registered names, sorted.
    public var names: [String] {
        parsers.keys.sorted()
    }

    /// Adds `parser` under its ``ToolCallParser/name``, replacing any parser of that name.
    public mutating func register(_ parser: any ToolCallParser.Type) {
        parsers[parser.name] = parser
    }

    /// Whether `name` is registered (`none` is).
    public func contains(_ name: String) -> Bool {
        parsers[name] != nil
    }

    /// A parser for `name`, or `nil` when no family has that name.
    public func parser(named name: String, idGenerator: ToolCallIDGenerator = .random) -> (any ToolCallParser)? {
        parsers[name].map { $0.init(idGenerator: idGenerator) }
    }
}
