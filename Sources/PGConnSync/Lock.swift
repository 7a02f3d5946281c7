/// The lock every shared state of the exporter is guarded by: `Synchronization.Mutex`, except in builds for
/// ThreadSanitizer (`-Xswiftc -DPGCONN_TSAN`, as `make sanitize-thread` builds), where it is a pthread mutex.
///
/// Swift 6.3's `Mutex` on Linux waits with futexes, which ThreadSanitizer does not see, so every access inside
/// `withLock` on two threads would be reported as a race (docs/reliability.md, "Sanitizers"). ThreadSanitizer
/// intercepts `pthread_mutex_lock`, so the TSan build uses it and its reports mean something.
#if PGCONN_TSAN
    #if canImport(Glibc)
        import Glibc
    #endif

    public final class Lock<Value>: @unchecked Sendable {
        // @unchecked: `value` is only touched between pthread_mutex_lock and pthread_mutex_unlock.
        private var value: Value
        private let mutex: UnsafeMutablePointer<pthread_mutex_t>

        public init(_ value: Value) {
            self.value = value
            mutex = .allocate(capacity: 1)
            pthread_mutex_init(mutex, nil)
        }

        deinit {
            pthread_mutex_destroy(mutex)
            mutex.deallocate()
        }

        public func withLock<Result, E: Error>(_ body: (inout Value) throws(E) -> Result) throws(E) -> Result {
            pthread_mutex_lock(mutex)
            defer { pthread_mutex_unlock(mutex) }
            return try body(&value)
        }
    }
#else
    public import Synchronization

    public typealias Lock<Value> = Synchronization.Mutex<Value>
#endif
