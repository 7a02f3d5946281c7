extension String {
    /// The string without leading and trailing whitespace (spaces, tabs, newlines), without Foundation.
    public func trimmingWhitespace() -> String {
        var characters = Substring(self)
        while let first = characters.first, first.isWhitespace { characters.removeFirst() }
        while let last = characters.last, last.isWhitespace { characters.removeLast() }
        return String(characters)
    }
}
