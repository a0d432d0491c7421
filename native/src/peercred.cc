// SO_PEERCRED for the control socket: which process is on the other end of a unix socket, so the
// supervisor can refuse requests from processes inside a session. Runs on the JS thread.
#include <napi.h>
#include <sys/socket.h>
#include <cerrno>
#include <cstring>

namespace bridle {

Napi::Value PeerCred(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) {
    Napi::TypeError::New(env, "peerCred(fd: number)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int fd = info[0].As<Napi::Number>().Int32Value();
  struct ucred cred {};
  socklen_t len = sizeof(cred);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    Napi::Error e = Napi::Error::New(env, std::string("getsockopt(SO_PEERCRED): ") + strerror(errno));
    e.Set("errno", Napi::Number::New(env, errno));
    e.ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("pid", Napi::Number::New(env, cred.pid));
  o.Set("uid", Napi::Number::New(env, cred.uid));
  o.Set("gid", Napi::Number::New(env, cred.gid));
  return o;
}

}  // namespace bridle
