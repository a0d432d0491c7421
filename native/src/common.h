// Shared pieces of the bridle native addon: per-instance state, the one error mode (BpfError), the
// libbpf log capture. A small, generic libbpf wrapper: no policy logic lives in C++.
//
// Threads: everything here runs on the JS main thread of the env that owns the addon instance, except
// the libbpf print callback (any thread that calls libbpf) and the ring buffer poller (ringbuf.cc).
#pragma once

#include <napi.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

struct bpf_object;
struct bpf_link;

namespace bridle {

// Something an addon instance holds open. Close() is idempotent and runs on the main thread.
class Resource {
 public:
  virtual ~Resource() = default;
  virtual void Close() = 0;
  uint64_t seq = 0;  // creation order, for closing in reverse at env teardown
};

// Per-env state (napi instance data): constructors, the JS error class, every live resource.
// No globals: two workers that both load the addon get two of these.
class Addon {
 public:
  explicit Addon(Napi::Env env);
  ~Addon();

  // Main thread. Registers a resource so env teardown closes it if JS did not.
  void Track(const std::shared_ptr<Resource>& r);
  // Main thread. Called by a resource once it is closed.
  void Forget(Resource* r);
  // Main thread (env cleanup hook, or instance data finalizer). Closes everything, newest first.
  void CloseAll();

  Napi::FunctionReference objectCtor, programCtor, linkCtor, mapCtor, ringCtor;
  Napi::FunctionReference errorCtor;  // BpfError from src/kernel/binding.ts, set by __setErrorClass

  size_t LiveCount() const { return live_.size(); }
  static Addon* Get(Napi::Env env) { return env.GetInstanceData<Addon>(); }

 private:
  std::map<uint64_t, std::shared_ptr<Resource>> live_;
  uint64_t next_ = 1;
  bool closing_ = false;
};

// ---- libbpf log capture (log.cc) ----
// libbpf_set_print is process wide; it is installed once. Lines are kept per calling thread (the last
// few hundred) so a failing load can put the verifier log into its error. BRIDLE_LIBBPF_DEBUG=1 also
// copies everything (including debug level) to stderr.
void InstallLibbpfPrint();
void LogReset();          // calling thread: forget captured lines (before an operation)
std::string LogTake();    // calling thread: captured lines since the last reset, then reset

// ---- errors (errors.cc) ----
// Throws a BpfError(message, errno, op, log) as a C++ exception (NAPI_CPP_EXCEPTIONS); node-addon-api
// turns it into a JS throw. `err` is a positive errno. `log` (libbpf output) is appended to the message
// tail and kept whole in error.log.
[[noreturn]] void ThrowBpf(Napi::Env env, const std::string& op, int err, const std::string& log = "");
Napi::Value MakeBpfError(Napi::Env env, const std::string& op, int err, const std::string& log = "");
// Normalise a libbpf return (negative errno, or -1 with errno set) to a positive errno.
int ErrOf(long ret);

// ---- helpers ----
int ProgTypeFromString(const std::string& s);  // -1 if unknown; accepts libbpf names ("tracing")
int MapTypeFromString(const std::string& s);   // -1 if unknown ("hash", "ringbuf", ...)
std::string ProgTypeName(int t);
std::string MapTypeName(int t);

}  // namespace bridle
