/// The rule OpenAI applies to function names: `^[a-zA-Z0-9_-]{1,64}$`.
public enum ToolFunctionName {
    /// The longest name allowed.
    public static let maximumLength = 64

    /// Whether `name` is 1 to 64 ASCII letters, digits, underscores or hyphens.
    public static func isValid(_ name: String) -> Bool {
        let bytes = name.utf8
        return !bytes.isEmpty && bytes.count <= maximumLength && bytes.allSatisfy(ToolCallBytes.isNameByte)
    }
}
