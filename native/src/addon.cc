// Module init, per-instance state, libbpf log capture, errors and feature probes.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/bpf.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <unistd.h>
#include <vector>

#include "classes.h"

namespace bridle {

// ---------------------------------------------------------------------------------------------------
// Addon

Addon::Addon(Napi::Env env) {
  // Env teardown (process exit, worker termination): close what JS left open. Runs on the main thread.
  env.AddCleanupHook([this]() { CloseAll(); });
}

Addon::~Addon() { CloseAll(); }

void Addon::Track(const std::shared_ptr<Resource>& r) {
  r->seq = next_++;
  live_[r->seq] = r;
}

void Addon::Forget(Resource* r) {
  if (closing_) return;  // CloseAll owns the map while it runs
  live_.erase(r->seq);
}

void Addon::CloseAll() {
  if (closing_) return;
  closing_ = true;
  // Newest first: ring buffers and links before the maps and objects they use.
  while (!live_.empty()) {
    auto it = std::prev(live_.end());
    std::shared_ptr<Resource> r = it->second;
    live_.erase(it);
    r->Close();
  }
  closing_ = false;
}

// ---------------------------------------------------------------------------------------------------
// libbpf log capture

namespace {
constexpr size_t kLogLines = 400;
thread_local std::deque<std::string> tlsLog;
thread_local std::string tlsPartial;
bool debugToStderr = false;
std::once_flag printOnce;

int PrintFn(enum libbpf_print_level level, const char* fmt, va_list args) {
  char buf[4096];
  va_list copy;
  va_copy(copy, args);
  int n = vsnprintf(buf, sizeof buf, fmt, copy);
  va_end(copy);
  std::string text;
  if (n >= static_cast<int>(sizeof buf)) {  // verifier logs come in one call: keep them whole
    std::vector<char> big(static_cast<size_t>(n) + 1);
    vsnprintf(big.data(), big.size(), fmt, args);
    text.assign(big.data(), static_cast<size_t>(n));
  } else if (n > 0) {
    text.assign(buf, static_cast<size_t>(n));
  }
  if (debugToStderr) fputs(text.c_str(), stderr);
  if (level == LIBBPF_DEBUG) return 0;  // too chatty to keep; BRIDLE_LIBBPF_DEBUG=1 shows it
  tlsPartial += text;
  size_t pos;
  while ((pos = tlsPartial.find('\n')) != std::string::npos) {
    tlsLog.emplace_back(tlsPartial.substr(0, pos));
    tlsPartial.erase(0, pos + 1);
    if (tlsLog.size() > kLogLines) tlsLog.pop_front();
  }
  return 0;
}
}  // namespace

void InstallLibbpfPrint() {
  std::call_once(printOnce, [] {
    const char* d = getenv("BRIDLE_LIBBPF_DEBUG");
    debugToStderr = d && *d && strcmp(d, "0") != 0;
    libbpf_set_print(PrintFn);
  });
}

void LogReset() {
  tlsLog.clear();
  tlsPartial.clear();
}

std::string LogTake() {
  std::string out;
  for (auto& l : tlsLog) {
    out += l;
    out += '\n';
  }
  if (!tlsPartial.empty()) out += tlsPartial;
  LogReset();
  return out;
}

// ---------------------------------------------------------------------------------------------------
// Errors

int ErrOf(long ret) {
  if (ret < -1) return static_cast<int>(-ret);
  return errno ? errno : EINVAL;
}

Napi::Value MakeBpfError(Napi::Env env, const std::string& op, int err, const std::string& log) {
  std::string msg = op + ": " + strerror(err);
  if (!log.empty()) {
    // The tail is what explains a verifier rejection; the whole log stays in error.log.
    std::vector<std::string> lines;
    size_t start = 0;
    while (start < log.size()) {
      size_t nl = log.find('\n', start);
      if (nl == std::string::npos) nl = log.size();
      if (nl > start) lines.emplace_back(log.substr(start, nl - start));
      start = nl + 1;
    }
    size_t from = lines.size() > 40 ? lines.size() - 40 : 0;
    msg += "\n";
    for (size_t i = from; i < lines.size(); i++) msg += "  " + lines[i] + "\n";
  }
  Addon* a = Addon::Get(env);
  if (a && !a->errorCtor.IsEmpty()) {
    return a->errorCtor.New({Napi::String::New(env, msg), Napi::Number::New(env, err),
                             Napi::String::New(env, op), Napi::String::New(env, log)});
  }
  Napi::Error e = Napi::Error::New(env, msg);
  e.Set("errno", Napi::Number::New(env, err));
  e.Set("op", Napi::String::New(env, op));
  e.Set("log", Napi::String::New(env, log));
  return e.Value();
}

void ThrowBpf(Napi::Env env, const std::string& op, int err, const std::string& log) {
  throw Napi::Error(env, MakeBpfError(env, op, err, log));
}

// ---------------------------------------------------------------------------------------------------
// Type names

int ProgTypeFromString(const std::string& s) {
  for (int t = 0; t < 256; t++) {
    const char* n = libbpf_bpf_prog_type_str(static_cast<bpf_prog_type>(t));
    if (n && s == n) return t;
  }
  return -1;
}

int MapTypeFromString(const std::string& s) {
  for (int t = 0; t < 256; t++) {
    const char* n = libbpf_bpf_map_type_str(static_cast<bpf_map_type>(t));
    if (n && s == n) return t;
  }
  return -1;
}

std::string ProgTypeName(int t) {
  const char* n = libbpf_bpf_prog_type_str(static_cast<bpf_prog_type>(t));
  return n ? n : std::to_string(t);
}

std::string MapTypeName(int t) {
  const char* n = libbpf_bpf_map_type_str(static_cast<bpf_map_type>(t));
  return n ? n : std::to_string(t);
}

namespace {

// Helper ids by name, from the uapi header the addon was built against (helpers newer than that header
// are unknown here; probe.helper() then throws).
#define BRIDLE_HELPER_NAME(x) #x
const char* const kHelpers[] = {__BPF_FUNC_MAPPER(BRIDLE_HELPER_NAME)};
#undef BRIDLE_HELPER_NAME

int HelperFromString(std::string s) {
  if (s.rfind("bpf_", 0) == 0) s = s.substr(4);
  for (size_t i = 0; i < sizeof kHelpers / sizeof kHelpers[0]; i++)
    if (s == kHelpers[i]) return static_cast<int>(i);
  return -1;
}

// ---------------------------------------------------------------------------------------------------
// Module functions (all main thread)

Napi::Value LibbpfVersion(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), libbpf_version_string());
}

Napi::Value NumPossibleCpus(const Napi::CallbackInfo& info) {
  int n = libbpf_num_possible_cpus();
  if (n < 0) ThrowBpf(info.Env(), "libbpf_num_possible_cpus", -n);
  return Napi::Number::New(info.Env(), n);
}

void SetErrorClass(const Napi::CallbackInfo& info) {
  Addon* a = Addon::Get(info.Env());
  a->errorCtor = Napi::Persistent(info[0].As<Napi::Function>());
}

// probe results: true / false; an unknown name throws (EINVAL) so typos are not read as "unsupported".
Napi::Value ProbeProgType(const Napi::CallbackInfo& info) {
  std::string s = info[0].As<Napi::String>();
  int t = ProgTypeFromString(s);
  if (t < 0) ThrowBpf(info.Env(), "probe.progType(" + s + "): unknown program type", EINVAL);
  LogReset();
  int r = libbpf_probe_bpf_prog_type(static_cast<bpf_prog_type>(t), nullptr);
  if (r < 0 && r != -EOPNOTSUPP) ThrowBpf(info.Env(), "libbpf_probe_bpf_prog_type(" + s + ")", -r, LogTake());
  return Napi::Boolean::New(info.Env(), r == 1);
}

Napi::Value ProbeMapType(const Napi::CallbackInfo& info) {
  std::string s = info[0].As<Napi::String>();
  int t = MapTypeFromString(s);
  if (t < 0) ThrowBpf(info.Env(), "probe.mapType(" + s + "): unknown map type", EINVAL);
  LogReset();
  int r = libbpf_probe_bpf_map_type(static_cast<bpf_map_type>(t), nullptr);
  if (r < 0 && r != -EOPNOTSUPP) ThrowBpf(info.Env(), "libbpf_probe_bpf_map_type(" + s + ")", -r, LogTake());
  return Napi::Boolean::New(info.Env(), r == 1);
}

// libbpf 1.1's libbpf_probe_bpf_helper only recognises the pre-6.x verifier wording ("unknown func"),
// so on newer kernels it answers "supported" for everything. Probe here instead: load a tiny program
// of the type that calls the helper and read the verifier log. tp_btf (prog type "tracing") is probed
// as a raw tracepoint on sched_process_exec.
int ProbeHelperLoad(int progType, int helper, std::string* why) {
  struct bpf_insn insns[] = {
      {BPF_JMP | BPF_CALL, 0, 0, 0, helper},          // call helper
      {BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_0, 0, 0, 0},  // r0 = 0
      {BPF_JMP | BPF_EXIT, 0, 0, 0, 0},               // exit
  };
  bpf_prog_load_opts opts;
  memset(&opts, 0, sizeof opts);
  opts.sz = sizeof opts;
  std::vector<char> log(64 * 1024);
  opts.log_buf = log.data();
  opts.log_size = static_cast<__u32>(log.size());
  opts.log_level = 1;
  switch (progType) {
    case BPF_PROG_TYPE_CGROUP_SOCK_ADDR: opts.expected_attach_type = BPF_CGROUP_INET4_CONNECT; break;
    case BPF_PROG_TYPE_CGROUP_SOCKOPT: opts.expected_attach_type = BPF_CGROUP_GETSOCKOPT; break;
    case BPF_PROG_TYPE_SK_LOOKUP: opts.expected_attach_type = BPF_SK_LOOKUP; break;
    case BPF_PROG_TYPE_TRACING: {
      int id = libbpf_find_vmlinux_btf_id("sched_process_exec", BPF_TRACE_RAW_TP);
      if (id < 0) return id;
      opts.expected_attach_type = BPF_TRACE_RAW_TP;
      opts.attach_btf_id = static_cast<__u32>(id);
      break;
    }
    case BPF_PROG_TYPE_LSM:
    case BPF_PROG_TYPE_EXT:
    case BPF_PROG_TYPE_STRUCT_OPS:
      return -EOPNOTSUPP;  // needs a specific attach target; load a real object instead
    default: break;
  }
  int fd = bpf_prog_load(static_cast<bpf_prog_type>(progType), nullptr, "GPL", insns, 3, &opts);
  if (fd >= 0) {
    close(fd);
    return 1;
  }
  std::string text(log.data(), strnlen(log.data(), log.size()));
  if (why) *why = text;
  if (text.find("invalid func ") != std::string::npos || text.find("unknown func ") != std::string::npos ||
      text.find("cannot use helper") != std::string::npos || text.find("cannot call") != std::string::npos)
    return 0;
  return 1;  // failed for another reason (argument checks): the helper itself is known to this type
}

Napi::Value ProbeHelper(const Napi::CallbackInfo& info) {
  std::string ps = info[0].As<Napi::String>();
  std::string hs = info[1].As<Napi::String>();
  int t = ProgTypeFromString(ps);
  if (t < 0) ThrowBpf(info.Env(), "probe.helper(" + ps + "): unknown program type", EINVAL);
  int h = HelperFromString(hs);
  if (h < 0) ThrowBpf(info.Env(), "probe.helper(" + hs + "): unknown helper", EINVAL);
  if (!libbpf_probe_bpf_prog_type(static_cast<bpf_prog_type>(t), nullptr) && t != BPF_PROG_TYPE_TRACING)
    return Napi::Boolean::New(info.Env(), false);
  std::string why;
  int r = ProbeHelperLoad(t, h, &why);
  if (r < 0) ThrowBpf(info.Env(), "probe.helper(" + ps + ", " + hs + ")", -r, why);
  return Napi::Boolean::New(info.Env(), r == 1);
}

// Does the kernel accept a program of this type with this expected attach type (by kernel number)?
// Loads `r0 = 1; exit`; the kernel checks the pair at load time.
Napi::Value ProbeAttachType(const Napi::CallbackInfo& info) {
  std::string ps = info[0].As<Napi::String>();
  uint32_t attach = info[1].As<Napi::Number>().Uint32Value();
  int t = ProgTypeFromString(ps);
  if (t < 0) ThrowBpf(info.Env(), "probe.attachType(" + ps + "): unknown program type", EINVAL);
  struct bpf_insn insns[] = {
      {BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_0, 0, 0, 1},
      {BPF_JMP | BPF_EXIT, 0, 0, 0, 0},
  };
  bpf_prog_load_opts opts;
  memset(&opts, 0, sizeof opts);
  opts.sz = sizeof opts;
  opts.expected_attach_type = static_cast<bpf_attach_type>(attach);
  int fd = bpf_prog_load(static_cast<bpf_prog_type>(t), nullptr, "GPL", insns, 2, &opts);
  if (fd >= 0) close(fd);
  return Napi::Boolean::New(info.Env(), fd >= 0);
}

Napi::Value ProgTypes(const Napi::CallbackInfo& info) {
  Napi::Array out = Napi::Array::New(info.Env());
  uint32_t i = 0;
  for (int t = 0; t < 256; t++)
    if (const char* n = libbpf_bpf_prog_type_str(static_cast<bpf_prog_type>(t)))
      out.Set(i++, Napi::String::New(info.Env(), n));
  return out;
}

Napi::Value MapTypes(const Napi::CallbackInfo& info) {
  Napi::Array out = Napi::Array::New(info.Env());
  uint32_t i = 0;
  for (int t = 0; t < 256; t++)
    if (const char* n = libbpf_bpf_map_type_str(static_cast<bpf_map_type>(t)))
      out.Set(i++, Napi::String::New(info.Env(), n));
  return out;
}

// Count of resources this instance still holds open (tests use it to check for leaks).
Napi::Value LiveCount(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(Addon::Get(info.Env())->LiveCount()));
}

}  // namespace

}  // namespace bridle

namespace bridle {
Napi::Value PeerCred(const Napi::CallbackInfo& info);
Napi::Value SetDumpable(const Napi::CallbackInfo& info);
Napi::Value GetDumpable(const Napi::CallbackInfo& info);
}

Napi::Object InitAll(Napi::Env env, Napi::Object exports) {
  using namespace bridle;
  InstallLibbpfPrint();
  auto* addon = new Addon(env);
  env.SetInstanceData<Addon>(addon);  // deleted (and CloseAll'd) at env teardown

  exports.Set("Object", Object::Init(env));
  exports.Set("Link", Link::Init(env));
  exports.Set("Map", Map::Init(env));
  exports.Set("RingBuffer", RingBufferInit(env));
  exports.Set("libbpfVersion", Napi::Function::New(env, LibbpfVersion, "libbpfVersion"));
  exports.Set("numPossibleCpus", Napi::Function::New(env, NumPossibleCpus, "numPossibleCpus"));
  exports.Set("setErrorClass", Napi::Function::New(env, SetErrorClass, "setErrorClass"));
  exports.Set("probeProgType", Napi::Function::New(env, ProbeProgType, "probeProgType"));
  exports.Set("probeMapType", Napi::Function::New(env, ProbeMapType, "probeMapType"));
  exports.Set("probeHelper", Napi::Function::New(env, ProbeHelper, "probeHelper"));
  exports.Set("probeAttachType", Napi::Function::New(env, ProbeAttachType, "probeAttachType"));
  exports.Set("progTypes", Napi::Function::New(env, ProgTypes, "progTypes"));
  exports.Set("liveCount", Napi::Function::New(env, LiveCount, "liveCount"));
  exports.Set("mapTypes", Napi::Function::New(env, MapTypes, "mapTypes"));
  exports.Set("peerCred", Napi::Function::New(env, PeerCred, "peerCred"));
  exports.Set("setDumpable", Napi::Function::New(env, SetDumpable, "setDumpable"));
  exports.Set("getDumpable", Napi::Function::New(env, GetDumpable, "getDumpable"));
  return exports;
}

NODE_API_MODULE(bridle_native, InitAll)
