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
  int timeoutMs = 50;
  size_t maxPending = 64u << 20;

  // Poller-thread only: the records of the current drain.
  std::vector<uint8_t> localData;
  std::vector<uint32_t> localOffsets;
  bool localFull = false;

  std::mutex mu;
  std::condition_variable cv;
  std::vector<uint8_t> pendingData;
  std::vector<uint32_t> pendingOffsets;  // start of each record in pendingData
  bool callScheduled = false;
  bool stop = false;
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
    Flush(true);
    tsfn.Release();
  }

  // Main thread: deliver everything pending as one batch (data Buffer + Uint32Array of n+1 offsets).
  void CallJs(Napi::Env env, Napi::Function cb) {
    std::vector<uint8_t> data;
    std::vector<uint32_t> offs;
    int e = 0;
    {
      std::lock_guard<std::mutex> lk(mu);
      data.swap(pendingData);
      offs.swap(pendingOffsets);
      callScheduled = false;
      if (threadDone) {
        e = err;
        err = 0;
      }
    }
    cv.notify_all();
    if (env == nullptr || cb.IsEmpty()) return;
    if (!offs.empty()) {
      batches++;
      records += offs.size();
      bytes += data.size();
      Napi::Buffer<uint8_t> buf = Napi::Buffer<uint8_t>::Copy(env, data.data(), data.size());
      Napi::Uint32Array o = Napi::Uint32Array::New(env, offs.size() + 1);
      memcpy(o.Data(), offs.data(), offs.size() * sizeof(uint32_t));
      o.Data()[offs.size()] = static_cast<uint32_t>(data.size());
      cb.Call({buf, o, Napi::Number::New(env, 0)});
    }
    if (e) cb.Call({env.Null(), env.Null(), Napi::Number::New(env, e)});
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
    for (auto& c : cbs) c.Call({});
  }

  void FreeKernelSide() {
    if (rb) ring_buffer__free(rb);
    rb = nullptr;
    if (fd >= 0) close(fd);
    fd = -1;
    if (addon) addon->Forget(this);
  }

  // Main thread, env teardown (or addon CloseAll): stop and join without touching JS.
  void Close() override {
    {
      std::lock_guard<std::mutex> lk(mu);
      stop = true;
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
