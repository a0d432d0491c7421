// prctl(PR_SET_DUMPABLE) for the supervisor: a process that is not dumpable writes no core file (its
// memory holds the policy and what the credentials kept from sessions), and only root with
// CAP_SYS_PTRACE may read its /proc/<pid> files or attach to it. Runs on the JS thread.
#include <napi.h>
#include <sys/prctl.h>
#include <cerrno>
#include <cstring>

namespace bridle {

static Napi::Value PrctlError(Napi::Env env, const char* what) {
  Napi::Error e = Napi::Error::New(env, std::string(what) + ": " + strerror(errno));
  e.Set("errno", Napi::Number::New(env, errno));
  e.ThrowAsJavaScriptException();
  return env.Undefined();
}

// setDumpable(on: boolean): prctl(PR_SET_DUMPABLE, on ? 1 : 0). Kept across fork; an exec sets it anew.
Napi::Value SetDumpable(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsBoolean()) {
    Napi::TypeError::New(env, "setDumpable(on: boolean)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  if (prctl(PR_SET_DUMPABLE, info[0].As<Napi::Boolean>().Value() ? 1 : 0, 0, 0, 0) != 0)
    return PrctlError(env, "prctl(PR_SET_DUMPABLE)");
  return env.Undefined();
}

// getDumpable(): prctl(PR_GET_DUMPABLE) != 0.
Napi::Value GetDumpable(const Napi::CallbackInfo& info) {
  int r = prctl(PR_GET_DUMPABLE, 0, 0, 0, 0);
  if (r < 0)
    return PrctlError(info.Env(), "prctl(PR_GET_DUMPABLE)");
  return Napi::Boolean::New(info.Env(), r != 0);
}

}  // namespace bridle
