// Object (bpf_object: open -> configure -> load -> attach) and Link (bpf_link). All main thread.
#include <pthread.h>
#include <signal.h>
#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "classes.h"

namespace bridle {

// ===================================================================================================
// Link

void LinkState::Close() {
  if (!link) return;
  // A pinned link outlives us: drop our fd only, the pin keeps the program attached. (disconnect
  // stops libbpf's detach callback, which would close the fd but also, for perf-event links, detach.)
  if (pinned) {
    bpf_link__disconnect(link);
    int fd = bpf_link__fd(link);
    if (fd >= 0) close(fd);
  }
  bpf_link__destroy(link);
  link = nullptr;
  if (addon) addon->Forget(this);
}

Napi::Function Link::Init(Napi::Env env) {
  Napi::Function f = DefineClass(env, "NativeLink",
                                 {InstanceMethod("__fd", &Link::Fd), InstanceMethod("__pin", &Link::Pin),
                                  InstanceMethod("__unpin", &Link::Unpin), InstanceMethod("__detach", &Link::Detach),
                                  InstanceMethod("__close", &Link::CloseJs), InstanceMethod("__info", &Link::Info)});
  Addon::Get(env)->linkCtor = Napi::Persistent(f);
  return f;
}

Link::Link(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Link>(info) {}

// Links belong to the object that made them (or to env teardown): GC of the wrapper does not detach.
Link::~Link() = default;

Napi::Object Link::Wrap(Napi::Env env, std::shared_ptr<LinkState> st) {
  Napi::Object o = Addon::Get(env)->linkCtor.New({});
  Link::Unwrap(o)->st_ = std::move(st);
  return o;
}

bpf_link* Link::Need(Napi::Env env, const char* op) {
  if (!st_ || !st_->link) ThrowBpf(env, std::string(op) + ": link is closed", EBADF);
  return st_->link;
}

Napi::Value Link::Fd(const Napi::CallbackInfo& info) {
  if (!st_ || !st_->link) return Napi::Number::New(info.Env(), -1);
  return Napi::Number::New(info.Env(), bpf_link__fd(st_->link));
}

void Link::Pin(const Napi::CallbackInfo& info) {
  std::string path = info[0].As<Napi::String>();
  bpf_link* l = Need(info.Env(), "bpf_link__pin");
  LogReset();
  int r = bpf_link__pin(l, path.c_str());
  if (r) ThrowBpf(info.Env(), "bpf_link__pin(" + path + ")", ErrOf(r), LogTake());
  st_->pinned = true;
  st_->pinPath = path;
}

void Link::Unpin(const Napi::CallbackInfo& info) {
  bpf_link* l = Need(info.Env(), "bpf_link__unpin");
  if (!st_->pinned) return;
  int r = bpf_link__unpin(l);
  if (r) ThrowBpf(info.Env(), "bpf_link__unpin(" + st_->pinPath + ")", ErrOf(r));
  st_->pinned = false;
  st_->pinPath.clear();
}

void Link::Detach(const Napi::CallbackInfo& info) {
  bpf_link* l = Need(info.Env(), "bpf_link__detach");
  int r = bpf_link__detach(l);
  if (r) ThrowBpf(info.Env(), "bpf_link__detach", ErrOf(r));
  st_->Close();
}

void Link::CloseJs(const Napi::CallbackInfo& info) {
  (void)info;
  if (st_) st_->Close();
}

Napi::Value Link::Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  bpf_link* l = Need(env, "bpf_link_get_info");
  bpf_link_info li;
  memset(&li, 0, sizeof li);
  __u32 len = sizeof li;
  int r = bpf_obj_get_info_by_fd(bpf_link__fd(l), &li, &len);
  if (r) ThrowBpf(env, "bpf_obj_get_info_by_fd(link)", ErrOf(r));
  Napi::Object o = Napi::Object::New(env);
  o.Set("id", li.id);
  o.Set("progId", li.prog_id);
  o.Set("type", libbpf_bpf_link_type_str(static_cast<bpf_link_type>(li.type))
                    ? libbpf_bpf_link_type_str(static_cast<bpf_link_type>(li.type))
                    : std::to_string(li.type));
  o.Set("pinned", st_->pinned);
  o.Set("pinPath", st_->pinPath);
  return o;
}

// ===================================================================================================
// Object

void ObjectState::Close() {
  if (!obj) return;
  for (auto& l : links) l->Close();
  links.clear();
  bpf_object__close(obj);
  obj = nullptr;
  if (addon) addon->Forget(this);
}

Napi::Function Object::Init(Napi::Env env) {
  Napi::Function f = DefineClass(
      env, "NativeObject",
      {StaticMethod("__open", &Object::Open), InstanceMethod("__setGlobal", &Object::SetGlobal),
       InstanceMethod("__reuseMap", &Object::ReuseMap), InstanceMethod("__setMaxEntries", &Object::SetMaxEntries),
       InstanceMethod("__setAutoload", &Object::SetAutoload),
       InstanceMethod("__setProgType", &Object::SetProgType), InstanceMethod("__load", &Object::Load),
       InstanceMethod("__programs", &Object::Programs), InstanceMethod("__maps", &Object::Maps),
       InstanceMethod("__progFd", &Object::ProgFd), InstanceMethod("__mapFd", &Object::MapFd),
       InstanceMethod("__attach", &Object::Attach), InstanceMethod("__attachCgroup", &Object::AttachCgroup),
       InstanceMethod("__iterRead", &Object::IterRead), InstanceMethod("__isLoaded", &Object::IsLoaded),
       InstanceMethod("__close", &Object::CloseJs)});
  Addon::Get(env)->objectCtor = Napi::Persistent(f);
  return f;
}

Object::Object(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Object>(info) {}

Object::~Object() {
  if (st_) st_->Close();  // GC (main thread): nothing else references a closed-over object
}

Napi::Value Object::Open(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = info[0].As<Napi::String>();
  std::string name = info.Length() > 1 && info[1].IsString() ? info[1].As<Napi::String>().Utf8Value() : "";
  bpf_object_open_opts opts;
  memset(&opts, 0, sizeof opts);
  opts.sz = sizeof opts;
  if (!name.empty()) opts.object_name = name.c_str();
  LogReset();
  errno = 0;
  bpf_object* obj = bpf_object__open_file(path.c_str(), &opts);
  if (!obj) {
    int err = errno ? errno : EINVAL;
    ThrowBpf(env, "bpf_object__open_file(" + path + ")", err, LogTake());
  }
  Addon* a = Addon::Get(env);
  auto st = std::make_shared<ObjectState>();
  st->obj = obj;
  st->addon = a;
  a->Track(st);
  Napi::Object o = a->objectCtor.New({});
  Object::Unwrap(o)->st_ = std::move(st);
  return o;
}

bpf_object* Object::Need(Napi::Env env, const char* op) {
  if (!st_ || !st_->obj) ThrowBpf(env, std::string(op) + ": object is closed", EBADF);
  return st_->obj;
}

bpf_program* Object::Prog(Napi::Env env, const std::string& name, const char* op) {
  bpf_program* p = bpf_object__find_program_by_name(Need(env, op), name.c_str());
  if (!p) ThrowBpf(env, std::string(op) + ": no program named '" + name + "'", ENOENT);
  return p;
}

bpf_map* Object::MapByName(Napi::Env env, const std::string& name, const char* op) {
  bpf_map* m = bpf_object__find_map_by_name(Need(env, op), name.c_str());
  if (!m) ThrowBpf(env, std::string(op) + ": no map named '" + name + "'", ENOENT);
  return m;
}

// Finds a global variable by its BTF name in the object's data sections and overwrites its initial
// value. Works for `const volatile` (.rodata) as well as .data/.bss, before load only: after load
// .rodata is frozen (and mapped read-only).
void Object::SetGlobal(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = info[0].As<Napi::String>();
  Napi::Buffer<uint8_t> val = info[1].As<Napi::Buffer<uint8_t>>();
  bpf_object* obj = Need(env, "setGlobal");
  std::string op = "setGlobal(" + name + ")";
  if (st_->loaded) ThrowBpf(env, op + ": object is already loaded", EBUSY);
  btf* b = bpf_object__btf(obj);
  if (!b) ThrowBpf(env, op + ": object has no BTF (build with -g)", ENOENT);

  __u32 n = btf__type_cnt(b);
  for (__u32 id = 1; id < n; id++) {
    const btf_type* t = btf__type_by_id(b, id);
    if (!btf_is_datasec(t)) continue;
    std::string sec = btf__name_by_offset(b, t->name_off);
    if (sec == ".kconfig" || sec == ".ksyms") continue;
    const btf_var_secinfo* vs = btf_var_secinfos(t);
    for (__u16 i = 0; i < btf_vlen(t); i++, vs++) {
      const btf_type* var = btf__type_by_id(b, vs->type);
      if (!var || !btf_is_var(var) || name != btf__name_by_offset(b, var->name_off)) continue;
      if (val.Length() != vs->size)
        ThrowBpf(env, op + ": variable is " + std::to_string(vs->size) + " bytes, got " +
                          std::to_string(val.Length()), EINVAL);
      // The internal map that backs this section: libbpf names it "<obj prefix><section>".
      std::string want = sec.substr(0, 15);
      bpf_map* m;
      bpf_object__for_each_map(m, obj) {
        if (!bpf_map__is_internal(m)) continue;
        bool match = bpf_map__btf_value_type_id(m) == id;
        if (!match) {
          std::string mn = bpf_map__name(m);
          match = mn.size() >= want.size() && mn.compare(mn.size() - want.size(), want.size(), want) == 0;
        }
        if (!match) continue;
        size_t sz = 0;
        void* data = const_cast<void*>(bpf_map__initial_value(m, &sz));
        if (!data || vs->offset + vs->size > sz)
          ThrowBpf(env, op + ": section " + sec + " has no initial value", ENOENT);
        memcpy(static_cast<uint8_t*>(data) + vs->offset, val.Data(), vs->size);
        return;
      }
      ThrowBpf(env, op + ": no map for section " + sec, ENOENT);
    }
  }
  ThrowBpf(env, op + ": no such global variable", ENOENT);
}

void Object::ReuseMap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = info[0].As<Napi::String>();
  std::string op = "bpf_map__reuse_fd(" + name + ")";
  bpf_map* m = MapByName(env, name, "reuseMap");
  if (st_->loaded) ThrowBpf(env, op + ": object is already loaded", EBUSY);
  int fd;
  if (Map* src = Map::FromValue(info[1])) {
    fd = src->FdOrThrow(env, "reuseMap");
  } else {
    fd = info[1].As<Napi::Number>().Int32Value();
  }
  LogReset();
  int r = bpf_map__reuse_fd(m, fd);  // libbpf dups fd; the source stays ours
  if (r) ThrowBpf(env, op, ErrOf(r), LogTake());
}

void Object::SetMaxEntries(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = info[0].As<Napi::String>();
  uint32_t n = info[1].As<Napi::Number>().Uint32Value();
  bpf_map* m = MapByName(env, name, "setMaxEntries");
  if (st_->loaded) ThrowBpf(env, "setMaxEntries(" + name + "): object is already loaded", EBUSY);
  int r = bpf_map__set_max_entries(m, n);
  if (r) ThrowBpf(env, "bpf_map__set_max_entries(" + name + ")", ErrOf(r));
}

void Object::SetAutoload(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = info[0].As<Napi::String>();
  bool on = info[1].As<Napi::Boolean>();
  bpf_program* p = Prog(env, name, "setAutoload");
  if (st_->loaded) ThrowBpf(env, "setAutoload(" + name + "): object is already loaded", EBUSY);
  int r = bpf_program__set_autoload(p, on);
  if (r) ThrowBpf(env, "bpf_program__set_autoload(" + name + ")", ErrOf(r));
}

// For sections this libbpf does not know yet (e.g. cgroup/connect_unix in libbpf 1.1): the program
// type by name and the expected attach type by its kernel number (stable uapi).
void Object::SetProgType(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = info[0].As<Napi::String>();
  std::string type = info[1].As<Napi::String>();
  uint32_t attach = info[2].As<Napi::Number>().Uint32Value();
  bpf_program* p = Prog(env, name, "setProgType");
  std::string op = "setProgType(" + name + ", " + type + ", " + std::to_string(attach) + ")";
  if (st_->loaded) ThrowBpf(env, op + ": object is already loaded", EBUSY);
  int t = ProgTypeFromString(type);
  if (t < 0) ThrowBpf(env, op + ": unknown program type", EINVAL);
  int r = bpf_program__set_type(p, static_cast<bpf_prog_type>(t));
  if (!r) r = bpf_program__set_expected_attach_type(p, static_cast<bpf_attach_type>(attach));
  if (r) ThrowBpf(env, op, ErrOf(r));
}

void Object::Load(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  bpf_object* obj = Need(env, "bpf_object__load");
  if (st_->loaded) ThrowBpf(env, "bpf_object__load: already loaded (or a previous load failed)", EBUSY);
  LogReset();
  // The verifier gives up with EAGAIN when a signal is pending for the loading thread (a profiler's
  // SIGPROF, a child's SIGCHLD), and libbpf retries only a few times. Signals wait while we load; the
  // process's other threads still take process-directed ones.
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  int r = bpf_object__load(obj);
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  st_->loaded = true;  // libbpf refuses a second attempt either way
  if (r) ThrowBpf(env, "bpf_object__load(" + std::string(bpf_object__name(obj)) + ")", ErrOf(r), LogTake());
  LogReset();
}

Napi::Value Object::Programs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  bpf_object* obj = Need(env, "programs");
  Napi::Array out = Napi::Array::New(env);
  uint32_t i = 0;
  bpf_program* p;
  bpf_object__for_each_program(p, obj) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", bpf_program__name(p));
    o.Set("section", bpf_program__section_name(p));
    o.Set("type", ProgTypeName(bpf_program__type(p)));
    o.Set("autoload", bpf_program__autoload(p));
    int fd = st_->loaded ? bpf_program__fd(p) : -1;
    o.Set("fd", fd < 0 ? -1 : fd);
    out.Set(i++, o);
  }
  return out;
}

Napi::Value Object::Maps(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  bpf_object* obj = Need(env, "maps");
  Napi::Array out = Napi::Array::New(env);
  uint32_t i = 0;
  bpf_map* m;
  bpf_object__for_each_map(m, obj) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", bpf_map__name(m));
    o.Set("type", MapTypeName(bpf_map__type(m)));
    o.Set("keySize", bpf_map__key_size(m));
    o.Set("valueSize", bpf_map__value_size(m));
    o.Set("maxEntries", bpf_map__max_entries(m));
    o.Set("internal", bpf_map__is_internal(m));
    out.Set(i++, o);
  }
  return out;
}

Napi::Value Object::ProgFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  bpf_program* p = Prog(env, info[0].As<Napi::String>(), "program");
  int fd = st_->loaded ? bpf_program__fd(p) : -1;  // not loaded (autoload off): libbpf says -ENOENT
  return Napi::Number::New(env, fd < 0 ? -1 : fd);
}

Napi::Value Object::MapFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  bpf_map* m = MapByName(env, info[0].As<Napi::String>(), "map");
  int fd = st_->loaded ? bpf_map__fd(m) : -1;
  return Napi::Number::New(env, fd < 0 ? -1 : fd);
}

Napi::Value Object::IsLoaded(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), st_ && st_->obj && st_->loaded);
}

Napi::Value Object::TrackLink(Napi::Env env, bpf_link* link) {
  auto ls = std::make_shared<LinkState>();
  ls->link = link;
  ls->addon = Addon::Get(env);
  ls->addon->Track(ls);
  st_->links.push_back(ls);
  return Link::Wrap(env, ls);
}

Napi::Value Object::Attach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = info[0].As<Napi::String>();
  bpf_program* p = Prog(env, name, "attach");
  if (!st_->loaded) ThrowBpf(env, "attach(" + name + "): object is not loaded", EINVAL);
  LogReset();
  errno = 0;
  bpf_link* l = bpf_program__attach(p);
  if (!l) {
    int err = errno ? errno : EINVAL;
    ThrowBpf(env, "bpf_program__attach(" + name + ", " + bpf_program__section_name(p) + ")", err, LogTake());
  }
  return TrackLink(env, l);
}

// cgroup attach through a BPF link: links on one cgroup coexist (like BPF_F_ALLOW_MULTI) and are
// detached when the link is destroyed, so nothing outlives bridle unless pinned.
Napi::Value Object::AttachCgroup(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = info[0].As<Napi::String>();
  std::string path = info[1].As<Napi::String>();
  bpf_program* p = Prog(env, name, "attachCgroup");
  if (!st_->loaded) ThrowBpf(env, "attachCgroup(" + name + "): object is not loaded", EINVAL);
  int cg = open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (cg < 0) ThrowBpf(env, "open(" + path + ")", errno);
  LogReset();
  errno = 0;
  bpf_link* l = bpf_program__attach_cgroup(p, cg);
  int err = errno ? errno : EINVAL;
  close(cg);
  if (!l) ThrowBpf(env, "bpf_program__attach_cgroup(" + name + ", " + path + ")", err, LogTake());
  return TrackLink(env, l);
}

// Attaches an iter/ program, creates an iterator and reads it to the end. Blocks the main thread for
// as long as the kernel takes to walk the objects (task iterators: milliseconds). An optional thread
// id limits a task iterator to that one task (bpf_iter_link_info.task.tid).
Napi::Value Object::IterRead(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = info[0].As<Napi::String>();
  bpf_program* p = Prog(env, name, "iterRead");
  if (!st_->loaded) ThrowBpf(env, "iterRead(" + name + "): object is not loaded", EINVAL);
  union bpf_iter_link_info linfo;
  memset(&linfo, 0, sizeof linfo);
  LIBBPF_OPTS(bpf_iter_attach_opts, opts);
  bool one_task = info.Length() > 1 && info[1].IsNumber();
  if (one_task) {
    linfo.task.tid = info[1].As<Napi::Number>().Uint32Value();
    opts.link_info = &linfo;
    opts.link_info_len = sizeof linfo;
  }
  LogReset();
  errno = 0;
  bpf_link* l = bpf_program__attach_iter(p, one_task ? &opts : nullptr);
  if (!l) ThrowBpf(env, "bpf_program__attach_iter(" + name + ")", errno ? errno : EINVAL, LogTake());
  int it = bpf_iter_create(bpf_link__fd(l));
  if (it < 0) {
    int err = ErrOf(it);
    bpf_link__destroy(l);
    ThrowBpf(env, "bpf_iter_create(" + name + ")", err);
  }
  std::vector<uint8_t> out;
  uint8_t buf[16384];
  int err = 0;
  for (;;) {
    ssize_t n = read(it, buf, sizeof buf);
    if (n > 0) {
      out.insert(out.end(), buf, buf + n);
    } else if (n == 0) {
      break;
    } else if (errno == EINTR || errno == EAGAIN) {
      continue;
    } else {
      err = errno;
      break;
    }
  }
  close(it);
  bpf_link__destroy(l);
  if (err) ThrowBpf(env, "read(iter " + name + ")", err);
  return Napi::Buffer<uint8_t>::Copy(env, out.data(), out.size());
}

void Object::CloseJs(const Napi::CallbackInfo& info) {
  (void)info;
  if (st_) st_->Close();
}

}  // namespace bridle
