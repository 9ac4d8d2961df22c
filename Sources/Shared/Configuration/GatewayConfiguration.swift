import RedisURLParsing

/// Everything the gateway runs with, resolved from flags, environment, `.env`, the YAML
/// file and defaults (in that order of precedence) by
/// ``GatewayConfiguration/load(from:)``.
///
/// The supervisor resolves it once per start or reload and hands the encoded form to each
/// worker through an inherited file descriptor, so every worker of a generation runs with
/// exactly the same settings.
public struct GatewayConfiguration: Sendable, Codable, Equatable {
    /// Listening socket, process count and lifecycle timings.
    public struct Server: Sendable, Codable, Equatable {
        /// `--bind` / `BIND`; ignored when systemd passes `LISTEN_FDS`.
        public var bind = BindAddress(host: "127.0.0.1", port: 8000)
        /// `--workers` / `WORKERS`: worker processes (default: number of CPUs).
        public var workers = 1
        /// `--drain-timeout` / `DRAIN_TIMEOUT`, seconds: graceful drain limit.
        public var drainTimeout: Double = 30
        /// `--user` / `RUN_AS_USER`: account to switch to after binding when started as root.
        public var user: String?
        /// `WORKER_HEARTBEAT_TIMEOUT`, seconds: a worker whose event loop has not
        /// heart-beaten for this long is killed and replaced.
        public var heartbeatTimeout: Double = 10
        /// `MAX_REQUEST_BODY_BYTES`: larger request bodies get 413.
        public var maxRequestBodyBytes = 1_048_576
        /// `REQUEST_HEADER_TIMEOUT`, seconds a new connection has to send a request head.
        public var headerTimeout: Double = 10
        /// `REQUEST_BODY_TIMEOUT`, seconds a request body may take after its head.
        public var bodyTimeout: Double = 60
        /// `KEEPALIVE_TIMEOUT`, seconds an idle keep-alive connection stays open.
        public var keepAliveTimeout: Double = 30
        /// `MAX_CONNECTIONS_PER_WORKER`: further connections are closed at once.
        public var maxConnectionsPerWorker = 16_384
        /// `UPSTREAM_HEALTH_INTERVAL`, seconds between the supervisor's upstream checks.
        public var healthInterval: Double = 2
        /// `UPSTREAM_METRICS_INTERVAL`, seconds between scrapes of each upstream's metrics.
        public var metricsInterval: Double = 0.5
        /// `UPSTREAM_CONNECT_TIMEOUT`, seconds to open a connection to an upstream.
        public var upstreamConnectTimeout: Double = 5
        /// `UPSTREAM_TIMEOUT`, seconds an upstream may take to send response headers
        /// (and between two body chunks) before the client gets 504.
        public var upstreamTimeout: Double = 300
        /// `UPSTREAM_KEEPALIVE_TIMEOUT`, seconds an idle upstream connection is kept for the
        /// next request; 0 = a new connection per request. Below vLLM's own 5 s
        /// (`VLLM_HTTP_TIMEOUT_KEEP_ALIVE`), so the gateway, not the upstream, closes them.
        public var upstreamKeepAliveTimeout: Double = 4
        /// `MAX_TOOLS_PER_REQUEST`: a chat request declaring more `tools` gets 400 before any
        /// of them is decoded (OpenAI's own limit is 128).
        public var maxToolsPerRequest = 128
        /// `MAX_SSE_EVENT_BYTES`: the longest single event an upstream stream may send; a
        /// longer one ends the stream with an error event (nothing unbounded is buffered).
        public var maxSSEEventBytes = 16 << 20
        /// `ROUTING_SESSION_HEADER`: the request field whose value keeps a session on one
        /// upstream (lower case).
        public var routingSessionHeader = "x-session-id"
        /// `ROUTING_RUNNING_REQUEST_TOKENS`: `cache_aware` weighs each request in flight on an
        /// upstream like this many prompt tokens to prefill there.
        public var routingRunningRequestTokens = 96
        /// `ROUTING_WAITING_REQUEST_TOKENS`: the same for each request waiting in its engine's
        /// queue (its `/metrics`): the engine is saturated.
        public var routingWaitingRequestTokens = 256
        /// `ROUTING_COLD_SLACK`: a prompt cached nowhere (or a session) goes to its hashed
        /// upstream unless that one has more than this many requests more than the least loaded.
        public var routingColdSlack = 1

        public init() {}
    }

    /// Client authentication.
    public struct Auth: Sendable, Codable, Equatable {
        /// `BEARER_TOKEN`: the single client key; nil or empty = auth off (loopback only).
        public var bearerToken: String?
        /// `keys:` from the config file: many keys, stored as SHA-256 digests.
        public var keys: [APIKey] = []

        public init() {}

        /// True when requests must carry a key.
        public var isEnabled: Bool { !(bearerToken ?? "").isEmpty || !keys.isEmpty }
    }

    /// A client key from the config file.
    public struct APIKey: Sendable, Codable, Equatable {
        /// Name used in logs (never the key itself).
        public var name: String
        /// Lower-case hex SHA-256 digest of the key.
        public var sha256: String
        /// Models this key may use; nil = every configured model.
        public var models: [String]?
        /// Requests per minute for this key; nil = `RATE_LIMIT_RPM`.
        public var rpm: Int?
        /// Tokens per minute for this key; nil = `RATE_LIMIT_TPM`.
        public var tpm: Int?

        public init(name: String, sha256: String, models: [String]? = nil, rpm: Int? = nil, tpm: Int? = nil) {
            self.name = name
            self.sha256 = sha256
            self.models = models
            self.rpm = rpm
            self.tpm = tpm
        }
    }

    /// Per-key limits applied when a key does not set its own.
    public struct Limits: Sendable, Codable, Equatable {
        /// `RATE_LIMIT_RPM`: requests per minute; a fresh key may burst this many at once.
        public var requestsPerMinute = 60
        /// `RATE_LIMIT_TPM`: prompt + completion tokens per minute; 0 = off.
        public var tokensPerMinute = 0

        public init() {}
    }

    /// Per-key limits shared by several gateway hosts through Redis (or Valkey).
    public struct SharedLimits: Sendable, Codable, Equatable {
        /// `REDIS_URL`: where the hosts keep their per-key limits; nil = each host alone,
        /// in its shared segment.
        public var redisURL: RedisURL?
        /// `REDIS_FAILURE_MODE`: the limits that apply while Redis cannot be used.
        public var failureMode = RedisFailureMode.local
        /// `GATEWAY_HOSTS`: gateway hosts sharing the limits; in `local` failure mode each
        /// enforces limit ÷ this.
        public var gatewayHosts = 1
        /// `REDIS_TIMEOUT`, seconds a limits command may take: the most a paused Redis adds
        /// to a request.
        public var redisTimeout: Double = 0.025

        public init() {}
    }

    /// What a host does about per-key limits while Redis cannot be used (`REDIS_FAILURE_MODE`).
    public enum RedisFailureMode: String, Sendable, Codable, CaseIterable {
        /// Each host enforces its shared-memory limits at limit ÷ `GATEWAY_HOSTS`.
        case local
        /// Admit every request the other checks admit.
        case open
        /// Refuse with 503 and `Retry-After`.
        case closed
    }

    /// The shared per-upstream circuit breaker.
    public struct CircuitBreaker: Sendable, Codable, Equatable {
        /// `CIRCUIT_BREAKER_ENABLED`.
        public var enabled = true
        /// `CIRCUIT_BREAKER_THRESHOLD`: consecutive failures that open it.
        public var threshold = 5
        /// `CIRCUIT_BREAKER_COOLDOWN`, seconds an open breaker fails fast before a probe.
        public var cooldown: Double = 10

        public init() {}
    }

    /// An upstream OpenAI-compatible server.
    public struct Upstream: Sendable, Codable, Equatable {
        /// Name used in config references and metric labels.
        public var name: String
        /// Root URL without `/v1`, e.g. `http://127.0.0.1:18000`; `demo` is the built-in demo.
        public var url: String
        /// Health path polled by the supervisor.
        public var healthPath: String
        /// Environment variable holding the API key sent upstream (cloud fallbacks).
        public var apiKeyEnv: String?
        /// Seconds to connect; nil = `UPSTREAM_CONNECT_TIMEOUT`.
        public var connectTimeout: Double?
        /// Seconds to wait for response headers and between body chunks; nil = `UPSTREAM_TIMEOUT`.
        public var timeout: Double?
        /// Seconds an idle connection is kept; nil = `UPSTREAM_KEEPALIVE_TIMEOUT`.
        public var keepAliveTimeout: Double?
        /// `metrics:`, the path of its Prometheus metrics (vLLM's engine load, for routing);
        /// nil = not scraped (`metrics: none`). `/metrics` by default, except for a cloud
        /// upstream (one with `api_key_env`), which has none.
        public var metricsPath: String?
        /// Removed by a reload: kept only so the positions of the others (which index the
        /// shared segment: health, breaker, in-flight counts, metrics) stay put.
        public var retired = false

        public init(name: String, url: String, healthPath: String = "/health", apiKeyEnv: String? = nil) {
            self.name = name
            self.url = url
            self.healthPath = healthPath
            self.apiKeyEnv = apiKeyEnv
            self.metricsPath = apiKeyEnv == nil && url != "demo" ? "/metrics" : nil
        }

        /// True for the built-in demo model (`--upstream demo`).
        public var isDemo: Bool { url == "demo" }
    }

    /// A model clients may name.
    public struct Model: Sendable, Codable, Equatable {
        /// The name clients send in `model`.
        public var name: String
        /// Upstreams serving it, balanced by least in-flight requests.
        public var upstreams: [String]
        /// The name the upstream knows it by; nil = same as ``name``.
        public var upstreamModel: String?
        /// Other names clients may use for it.
        public var aliases: [String]
        /// Tool-call parser family: hermes | llama3_json | mistral | pythonic | none.
        public var toolParser: String
        /// Models tried, in order, when this one fails before any byte reached the client.
        public var fallbacks: [String]
        /// `routing:`, how requests spread over several upstreams (`cache_aware` by default).
        public var routing: RoutingPolicy

        public init(
            name: String, upstreams: [String], upstreamModel: String? = nil, aliases: [String] = [],
            toolParser: String = "none", fallbacks: [String] = [], routing: RoutingPolicy = .cacheAware
        ) {
            self.routing = routing
            self.name = name
            self.upstreams = upstreams
            self.upstreamModel = upstreamModel
            self.aliases = aliases
            self.toolParser = toolParser
            self.fallbacks = fallbacks
        }
    }

    public var server = Server()
    public var auth = Auth()
    public var limits = Limits()
    public var circuitBreaker = CircuitBreaker()
    public var sharedLimits = SharedLimits()
    /// Upstreams by configuration order; with no config file, the single `default`
    /// upstream from `--upstream` / `VLLM_UPSTREAM_URL`.
    public var upstreams: [Upstream] = [Upstream(name: "default", url: "http://127.0.0.1:18000")]
    /// Configured models; empty = discover the default upstream's models from `/v1/models`.
    public var models: [Model] = []
    /// Model names with their own metric label, in label order: configuration order at
    /// start, then names new in each reload appended (the first 32 get a label).
    public var metricModels: [String] = []
    /// `LOG_LEVEL`: trace|debug|info|notice|warning|error|critical.
    public var logLevel = "info"
    /// `--config` / `LLM_GATEWAY_CONFIG`: where the YAML came from (reloaded on SIGHUP).
    public var configFile: String?

    public init() {}
}
