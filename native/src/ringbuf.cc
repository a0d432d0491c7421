// RingBuffer: a poller thread drains a BPF ring buffer map and hands whole batches to JS through one
// ThreadSafeFunction. At most one call is queued at a time: while JS is busy, records accumulate in
// `pending` and go out together with the next call, so batches arrive in order and the event loop is
// never flooded. If JS falls behind by more than maxPendingBytes the poller stops reading, the kernel
// ring fills, and the BPF side sees reservation failures (which it must count): loss is visible there,
// never silent here.
//
// Threads: constructor, __close, __ref/__unref, __stats, CallJs and Finalize run on the JS main thread;
// Run and OnSample run on the poller thread. `mu` guards pending/callScheduled/stop/threadDone/err.
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <algorithm>
#include <cstring>
#include <thread>
#include <vector>

#include "classes.h"

namespace bridle {
namespace {

constexpr size_t kLocalFlushBytes = 4u << 20;  // hand a batch over after this much, even mid-drain
constexpr int kStopEarly = -ENOBUFS;           // OnSample's "batch is full" (not an error)

struct RingState : Resource, std::enable_shared_from_this<RingState> {
  Addon* addon = nullptr;
  int fd = -1;
  ring_buffer* rb = nullptr;
  std::thread thread;
  Napi::ThreadSafeFunction tsfn;
  Napi::ObjectReference self;          // keeps the JS wrapper alive while the poller runs
  std::vector<Napi::FunctionReference> closeCbs;
  napi_env env = nullptr;
  bool cleanupHookSet = false;
  bool finalized = false;
  bool freed = false;
  int timeoutMs = 50;
  size_t maxPending = 64u << 20;
  size_t maxBatch = 16384;  // records per JS call

  // Poller-thread only: the records of the current drain.
  std::vector<uint8_t> localData;
  std::vector<uint32_t> localOffsets;
  bool localFull = false;

  std::mutex mu;
  std::condition_variable cv;
  std::vector<uint8_t> pendingData;
  std::vector<uint32_t> pendingOffsets;  // start of each record in pendingData
  size_t head = 0;                       // records before this index were delivered
  bool callScheduled = false;
  bool stop = false;
  bool teardown = false;  // env is going away: JS will not run again
  bool threadDone = false;
  int err = 0;  // poll failure (positive errno), reported once after the data

  // Main thread.
  uint64_t batches = 0, records = 0, bytes = 0;

  // Poller thread: one record. Copies it; stops the drain early when the local batch is large.
  static int OnSample(void* ctx, void* data, size_t size) {
    auto* s = static_cast<RingState*>(ctx);
    s->localOffsets.push_back(static_cast<uint32_t>(s->localData.size()));
    const uint8_t* p = static_cast<const uint8_t*>(data);
    s->localData.insert(s->localData.end(), p, p + size);
    if (s->localData.size() >= kLocalFlushBytes) {
      s->localFull = true;
      return kStopEarly;  // libbpf has already consumed this record
    }
    return 0;
  }

  // Poller thread: move the local batch to pending and make sure one JS call is queued.
  void Flush(bool last) {
    bool schedule = false;
    {
      std::lock_guard<std::mutex> lk(mu);
      if (!localData.empty() || !localOffsets.empty()) {
        uint32_t base = static_cast<uint32_t>(pendingData.size());
        if (pendingData.empty()) {
          pendingData.swap(localData);
          pendingOffsets.swap(localOffsets);
        } else {
          pendingData.insert(pendingData.end(), localData.begin(), localData.end());
          for (uint32_t o : localOffsets) pendingOffsets.push_back(base + o);
        }
        localData.clear();
        localOffsets.clear();
      }
      if (last) threadDone = true;
      if ((!pendingOffsets.empty() || last) && !callScheduled) {
        callScheduled = true;
        schedule = true;
      }
    }
    if (schedule) {
      auto me = shared_from_this();
      napi_status st = tsfn.NonBlockingCall([me](Napi::Env env, Napi::Function cb) { me->CallJs(env, cb); });
      if (st != napi_ok) {  // env is going away: nobody left to deliver to
        std::lock_guard<std::mutex> lk(mu);
        callScheduled = false;
      }
    }
  }

  // Poller thread body.
  void Run() {
    for (;;) {
      {
        std::unique_lock<std::mutex> lk(mu);
        // Backpressure: let JS catch up before reading more from the kernel.
        while (!stop && pendingData.size() >= maxPending) cv.wait_for(lk, std::chrono::milliseconds(50));
        if (stop) break;
      }
      localFull = false;
      int n = ring_buffer__poll(rb, timeoutMs);
      // Records committed without a wakeup (BPF_RB_NO_WAKEUP, to spare a context switch per record)
      // are collected here, on the poll timer.
      if (n == 0) n = ring_buffer__consume(rb);
      if (n < 0 && !(n == kStopEarly && localFull) && n != -EINTR) {
        std::lock_guard<std::mutex> lk(mu);
        err = -n;
        break;
      }
      Flush(false);
    }
    // Drain what the kernel already has (a stop must not lose committed records), then hand over.
    for (;;) {
      localFull = false;
      int n = ring_buffer__consume(rb);
      if (n == kStopEarly && localFull) {
        Flush(false);
        continue;
      }
      break;
    }
    Flush(false);
    {
      // Keep the TSFN until JS has taken everything, so the tail still goes out in maxBatch chunks
      // with event loop turns in between. Env teardown does not wait.
      std::unique_lock<std::mutex> lk(mu);
      while (!teardown && (head < pendingOffsets.size() || callScheduled))
        cv.wait_for(lk, std::chrono::milliseconds(50));
    }
    Flush(true);
    tsfn.Release();
  }

  // Main thread: deliver pending records as one batch (data Buffer + Uint32Array of n+1 offsets), at
  // most maxBatch records per call; a remainder is re-queued so the event loop runs in between. Once
  // the poller is done everything left goes out now (the TSFN may be closing behind us).
  void CallJs(Napi::Env env, Napi::Function cb) {
    for (;;) {
      std::vector<uint8_t> data;
      std::vector<uint32_t> offs;
      bool more = false;
      int e = 0;
      {
        std::lock_guard<std::mutex> lk(mu);
        size_t avail = pendingOffsets.size() - head;
        size_t take = threadDone ? avail : std::min(avail, maxBatch);
        if (take > 0) {
          uint32_t from = pendingOffsets[head];
          uint32_t to = head + take < pendingOffsets.size() ? pendingOffsets[head + take]
                                                           : static_cast<uint32_t>(pendingData.size());
          data.assign(pendingData.begin() + from, pendingData.begin() + to);
          offs.reserve(take + 1);
          for (size_t i = head; i < head + take; i++) offs.push_back(pendingOffsets[i] - from);
          offs.push_back(to - from);
          head += take;
        }
        if (head == pendingOffsets.size()) {
          pendingData.clear();
          pendingOffsets.clear();
          head = 0;
        } else if (head >= 4096 && head * 2 >= pendingOffsets.size()) {
          // Compact, so a steady inflow does not grow the buffer (amortised: moves at most what is left).
          uint32_t base = pendingOffsets[head];
          pendingData.erase(pendingData.begin(), pendingData.begin() + base);
          pendingOffsets.erase(pendingOffsets.begin(), pendingOffsets.begin() + static_cast<long>(head));
          for (auto& o : pendingOffsets) o -= base;
          head = 0;
        }
        more = head < pendingOffsets.size();
        if (!more) callScheduled = false;
        if (threadDone && !more) {
          e = err;
          err = 0;
        }
      }
      cv.notify_all();
      // Raw Node-API from here: node-addon-api turns a failed call into Error::New, which is fatal
      // when JS cannot run (a worker being terminated). A failure here just ends delivery.
      bool ok = env != nullptr && !cb.IsEmpty();  // null env: the TSFN is being torn down
      if (ok && !offs.empty()) {
        batches++;
        records += offs.size() - 1;
        bytes += data.size();
        ok = CallBatch(env, cb, data.data(), data.size(), offs.data(), offs.size());
      }
      if (ok && e) ok = CallError(env, cb, e);
      if (!ok) {
        // binding.ts catches onBatch's own exceptions, so this is JS being unable to run. Keep the
        // bookkeeping consistent (the poller waits for callScheduled to clear) and stop.
        std::lock_guard<std::mutex> lk(mu);
        pendingData.clear();
        pendingOffsets.clear();
        head = 0;
        callScheduled = false;
        cv.notify_all();
        return;
      }
      if (!more || Reschedule()) return;
      // The TSFN is closing (poller gone): deliver the rest synchronously.
    }
  }

  static bool CallBatch(napi_env env, napi_value cb, const uint8_t* data, size_t len, const uint32_t* offs,
                        size_t n) {
    napi_value buf, ab, arr, zero, undef, result;
    void* copy = nullptr;
    void* p = nullptr;
    if (napi_create_buffer_copy(env, len, data, &copy, &buf) != napi_ok) return false;
    if (napi_create_arraybuffer(env, n * sizeof(uint32_t), &p, &ab) != napi_ok) return false;
    memcpy(p, offs, n * sizeof(uint32_t));
    if (napi_create_typedarray(env, napi_uint32_array, n, ab, 0, &arr) != napi_ok) return false;
    if (napi_create_int32(env, 0, &zero) != napi_ok || napi_get_undefined(env, &undef) != napi_ok) return false;
    napi_value argv[3] = {buf, arr, zero};
    return napi_call_function(env, undef, cb, 3, argv, &result) == napi_ok;
  }

  static bool CallError(napi_env env, napi_value cb, int e) {
    napi_value nul, code, undef, result;
    if (napi_get_null(env, &nul) != napi_ok || napi_create_int32(env, e, &code) != napi_ok ||
        napi_get_undefined(env, &undef) != napi_ok)
      return false;
    napi_value argv[3] = {nul, nul, code};
    return napi_call_function(env, undef, cb, 3, argv, &result) == napi_ok;
  }

  // Main thread: queue the next CallJs for the remainder (callScheduled is still true).
  bool Reschedule() {
    auto me = shared_from_this();
    return tsfn.NonBlockingCall([me](Napi::Env env, Napi::Function cb) { me->CallJs(env, cb); }) == napi_ok;
  }

  static void OnEnvCleanup(void* arg) { static_cast<RingState*>(arg)->Close(); }

  // Main thread: the TSFN is gone (poller released it, queue drained). Join, free, resolve close().
  void Finalize(Napi::Env env) {
    if (finalized) return;
    finalized = true;
    if (thread.joinable()) thread.join();
    if (cleanupHookSet) {
      napi_remove_env_cleanup_hook(env, OnEnvCleanup, this);
      cleanupHookSet = false;
    }
    FreeKernelSide();
    std::vector<Napi::FunctionReference> cbs;
    cbs.swap(closeCbs);
    if (!self.IsEmpty()) self.Reset();
    bool dying;
    {
      std::lock_guard<std::mutex> lk(mu);
      dying = teardown;
    }
    if (dying) return;  // env teardown: no more JS
    for (auto& c : cbs) {
      napi_value undef, fn, result;
      // Raw calls: nothing may throw out of a finalizer, and JS may be unable to run.
      if (napi_get_undefined(env, &undef) != napi_ok || napi_get_reference_value(env, c.operator napi_ref(), &fn) != napi_ok)
        break;
      if (napi_call_function(env, undef, fn, 0, nullptr, &result) != napi_ok) break;
    }
  }

  void FreeKernelSide() {
    if (freed) return;  // also guards addon, which may be gone by the time a late finalizer runs
    freed = true;
    if (rb) ring_buffer__free(rb);
    rb = nullptr;
    if (fd >= 0) close(fd);
    fd = -1;
    if (addon) addon->Forget(this);
  }

  // Main thread, env teardown (or addon CloseAll): stop and join without touching JS.
  void Close() override {
    if (freed) return;
    {
      std::lock_guard<std::mutex> lk(mu);
      stop = true;
      teardown = true;
    }
    cv.notify_all();
    if (thread.joinable()) thread.join();
    if (cleanupHookSet && env) {
      napi_remove_env_cleanup_hook(env, OnEnvCleanup, this);
      cleanupHookSet = false;
    }
    FreeKernelSide();
  }
};

class RingBuffer : public Napi::ObjectWrap<RingBuffer> {
 public:
  static Napi::Function Init(Napi::Env env) {
    Napi::Function f =
        DefineClass(env, "NativeRingBuffer",
                    {InstanceMethod("__close", &RingBuffer::CloseJs), InstanceMethod("__ref", &RingBuffer::Ref),
                     InstanceMethod("__unref", &RingBuffer::Unref), InstanceMethod("__stats", &RingBuffer::Stats)});
    Addon::Get(env)->ringCtor = Napi::Persistent(f);
    return f;
  }

  // Main thread. new RingBuffer(map: NativeMap, cb: (data, offsets, errno) => void, opts?)
  explicit RingBuffer(const Napi::CallbackInfo& info) : Napi::ObjectWrap<RingBuffer>(info) {
    Napi::Env env = info.Env();
    Map* m = Map::FromValue(info[0]);
    if (!m) ThrowBpf(env, "RingBuffer: first argument must be a BpfMap", EINVAL);
    int mfd = m->FdOrThrow(env, "RingBuffer");
    Napi::Function cb = info[1].As<Napi::Function>();
    auto st = std::make_shared<RingState>();
    st->addon = Addon::Get(env);
    st->env = env;
    if (info.Length() > 2 && info[2].IsObject()) {
      Napi::Object o = info[2].As<Napi::Object>();
      if (o.Has("timeoutMs") && o.Get("timeoutMs").IsNumber())
        st->timeoutMs = o.Get("timeoutMs").As<Napi::Number>().Int32Value();
      if (o.Has("maxBatchRecords") && o.Get("maxBatchRecords").IsNumber())
        st->maxBatch = std::max<size_t>(1, o.Get("maxBatchRecords").As<Napi::Number>().Uint32Value());
      if (o.Has("maxPendingBytes") && o.Get("maxPendingBytes").IsNumber())
        st->maxPending = static_cast<size_t>(o.Get("maxPendingBytes").As<Napi::Number>().DoubleValue());
    }
    st->fd = fcntl(mfd, F_DUPFD_CLOEXEC, 3);
    if (st->fd < 0) ThrowBpf(env, "RingBuffer: dup(map fd)", errno);
    LogReset();
    errno = 0;
    st->rb = ring_buffer__new(st->fd, &RingState::OnSample, st.get(), nullptr);
    if (!st->rb) {
      int err = errno ? errno : EINVAL;
      close(st->fd);
      st->fd = -1;
      ThrowBpf(env, "ring_buffer__new", err, LogTake());
    }
    st->addon->Track(st);
    RingState* raw = st.get();
    auto keep = new std::shared_ptr<RingState>(st);
    st->tsfn = Napi::ThreadSafeFunction::New(
        env, cb, "bridle-ringbuf", 0, 1, keep,
        [](Napi::Env env, std::shared_ptr<RingState>* k) {
          (*k)->Finalize(env);
          delete k;
        });
    // Registered after the TSFN's own hook, so it runs first at teardown: the poller is joined before
    // Node frees the TSFN.
    napi_add_env_cleanup_hook(env, RingState::OnEnvCleanup, raw);
    st->cleanupHookSet = true;
    st->self = Napi::Persistent(info.This().As<Napi::Object>());
    st_ = st;
    st->thread = std::thread([st]() { st->Run(); });
  }

  ~RingBuffer() override {
    if (st_) st_->Close();  // only reachable after finalize (self ref), so this is a no-op guard
  }

 private:
  // Main thread. (cb) -> cb() once the poller stopped and every pending record was delivered.
  void CloseJs(const Napi::CallbackInfo& info) {
    if (!st_) return;
    if (info.Length() > 0 && info[0].IsFunction()) {
      if (st_->finalized) {
        info[0].As<Napi::Function>().Call({});
        return;
      }
      st_->closeCbs.push_back(Napi::Persistent(info[0].As<Napi::Function>()));
    }
    {
      std::lock_guard<std::mutex> lk(st_->mu);
      st_->stop = true;
    }
    st_->cv.notify_all();
  }

  void Ref(const Napi::CallbackInfo& info) {
    if (st_ && !st_->finalized) st_->tsfn.Ref(info.Env());
  }
  void Unref(const Napi::CallbackInfo& info) {
    if (st_ && !st_->finalized) st_->tsfn.Unref(info.Env());
  }

  Napi::Value Stats(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Object o = Napi::Object::New(env);
    o.Set("batches", static_cast<double>(st_ ? st_->batches : 0));
    o.Set("records", static_cast<double>(st_ ? st_->records : 0));
    o.Set("bytes", static_cast<double>(st_ ? st_->bytes : 0));
    o.Set("closed", !st_ || st_->finalized);
    return o;
  }

  std::shared_ptr<RingState> st_;
};

}  // namespace

Napi::Function RingBufferInit(Napi::Env env) { return RingBuffer::Init(env); }

}  // namespace bridle
