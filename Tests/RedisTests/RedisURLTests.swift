import RedisURLParsing
import Testing

/// `REDIS_URL`: what parses, the defaults, refusals that say what is wrong without
/// repeating the URL, and a description that never shows the password.
@Suite struct RedisURLTests {
    @Test func defaults() throws {
        #expect(try RedisURL(parsing: "redis://localhost") == RedisURL(host: "localhost"))
        #expect(try RedisURL(parsing: "redis://localhost/") == RedisURL(host: "localhost"))
        #expect(try RedisURL(parsing: "REDIS://Cache.Example:7000") == RedisURL(host: "cache.example", port: 7000))
    }

    @Test func everyPart() throws {
        let url = try RedisURL(parsing: "rediss://gateway:s3cr%3At@10.0.0.5:6380/2")
        #expect(url == RedisURL(tls: true, host: "10.0.0.5", port: 6380, user: "gateway", password: "s3cr:t", database: 2))
        #expect(try RedisURL(parsing: "redis://:pw@[::1]:6390/15") == RedisURL(host: "::1", port: 6390, password: "pw", database: 15))
        #expect(try RedisURL(parsing: "redis://[fe80::1]") == RedisURL(host: "fe80::1"))
    }

    @Test func aPasswordMayHoldReservedCharacters() throws {
        // The last `@` ends the user information.
        let url = try RedisURL(parsing: "redis://u:a@b/c?d#e@host:1/0")
        #expect(url.password == "a@b/c?d#e" && url.host == "host" && url.port == 1)
        #expect(try RedisURL(parsing: "redis://:%F0%9F%94%91@h").password == "🔑")
    }

    @Test func theDescriptionHidesThePassword() throws {
        let url = try RedisURL(parsing: "rediss://gateway:hunter2@redis:6380/1")
        #expect(url.description == "rediss://gateway:***@redis:6380/1")
        #expect(String(reflecting: url) == url.description)
        #expect("\([url])".contains("***") && !"\([url])".contains("hunter2"))
        var dumped = ""
        dump(url, to: &dumped)
        #expect(!dumped.contains("hunter2"))
        #expect(try RedisURL(parsing: "redis://:hunter2@[::1]").description == "redis://:***@[::1]:6379/0")
        #expect(try RedisURL(parsing: "redis://h").description == "redis://h:6379/0")
    }

    @Test(arguments: [
        ("", "must start with redis:// or rediss://"),
        ("http://h", "must start with redis:// or rediss://"),
        ("redis:/h", "must start with redis:// or rediss://"),
        ("redis://", "no host"),
        ("redis://:6379", "no host"),
        ("redis://h:0", "the port must be a number from 1 to 65535"),
        ("redis://h:65536", "the port must be a number from 1 to 65535"),
        ("redis://h:-1", "the port must be a number from 1 to 65535"),
        ("redis://h:+80", "the port must be a number from 1 to 65535"),
        ("redis://h:", "the port must be a number from 1 to 65535"),
        ("redis://h:99999999999999999999999", "the port must be a number from 1 to 65535"),
        ("redis://h:1:2", "the port must be a number from 1 to 65535"),
        ("redis://h/x", "the path must be a database number (/0 to /999999999)"),
        ("redis://h/-1", "the path must be a database number (/0 to /999999999)"),
        ("redis://h/1/2", "the path must be a database number (/0 to /999999999)"),
        ("redis://h/1?x=y", "the path must be a database number (/0 to /999999999)"),
        ("redis://h/99999999999", "the path must be a database number (/0 to /999999999)"),
        ("redis://h /0", "contains a space or a control character"),
        ("redis://h\r\nAUTH x", "contains a space or a control character"),
        ("redis://h\u{0}", "contains a space or a control character"),
        ("redis://hé", "the host is not a host name or an IP address"),
        ("redis://h%2F", "the host is not a host name or an IP address"),
        ("redis://[::1", "IPv6 host without its closing ]"),
        ("redis://[]", "the IPv6 host is not an IPv6 address"),
        ("redis://[zz::1]", "the IPv6 host is not an IPv6 address"),
        ("redis://[::1]x", "unexpected text after the IPv6 host"),
        ("redis://secret@h", "user information must be user:password or :password"),
        ("redis://user:@h", "the password is empty"),
        ("redis://:@h", "the password is empty"),
        ("redis://:pw%@h", "the password has a % not followed by two hex digits"),
        ("redis://:pw%zz@h", "the password has a % not followed by two hex digits"),
        ("redis://u%FF:pw@h", "the user is not UTF-8 once percent-decoded"),
        ("redis://:pw@", "no host"),
    ])
    func refusals(text: String, reason: String) {
        #expect(throws: RedisURLError(reason: reason)) { try RedisURL(parsing: text) }
    }

    @Test func refusalsNeverRepeatThePassword() {
        for text in ["redis://u:hunter2@", "redis://u:hunter2@h:x", "redis://u:hunter2@h/x", "redis://u:hunter2%@h", "redis://:hunter2@h é"] {
            let error = #expect(throws: RedisURLError.self) { try RedisURL(parsing: text) }
            #expect(error.map { !$0.description.contains("hunter2") } == true, "\(text)")
        }
    }

    @Test func overlongInputIsRefused() {
        let text = "redis://" + String(repeating: "a", count: 5000)
        #expect(throws: RedisURLError(reason: "longer than 4096 bytes")) { try RedisURL(parsing: text) }
        #expect(throws: RedisURLError(reason: "the host is not a host name or an IP address")) {
            try RedisURL(parsing: "redis://" + String(repeating: "a", count: 300))
        }
    }
}
