// Map: element access on an owned map fd. All main thread; each call is one bpf() syscall (or a loop of
// them for keys()), none of which block.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <vector>

#include "classes.h"

#ifndef ENOTSUPP
#define ENOTSUPP 524  // kernel-internal "not supported", leaks out of some bpf() commands
#endif

namespace bridle {

void MapState::Close() {
  if (fd < 0) return;
  close(fd);
  fd = -1;
  if (addon) addon->Forget(this);
}

Napi::Function Map::Init(Napi::Env env) {
  Napi::Function f = DefineClass(
      env, "NativeMap",
      {StaticMethod("__fromFd", &Map::FromFd), StaticMethod("__openPinned", &Map::OpenPinned),
       StaticMethod("__create", &Map::Create), InstanceMethod("__info", &Map::Info),
       InstanceMethod("__lookup", &Map::Lookup), InstanceMethod("__update", &Map::Update),
       InstanceMethod("__delete", &Map::Delete), InstanceMethod("__keys", &Map::Keys),
       InstanceMethod("__updateBatch", &Map::UpdateBatch), InstanceMethod("__pin", &Map::Pin),
       InstanceMethod("__close", &Map::CloseJs)});
  Addon::Get(env)->mapCtor = Napi::Persistent(f);
  return f;
}

Map::Map(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Map>(info) {}

Map::~Map() {
  if (st_) st_->Close();  // GC (main thread): release the fd
}

Map* Map::FromValue(Napi::Value v) {
  if (!v.IsObject()) return nullptr;
  Addon* a = Addon::Get(v.Env());
  if (!v.As<Napi::Object>().InstanceOf(a->mapCtor.Value())) return nullptr;
  return Map::Unwrap(v.As<Napi::Object>());
}

int Map::FdOrThrow(Napi::Env env, const char* op) {
  if (!st_ || st_->fd < 0) ThrowBpf(env, std::string(op) + ": map is closed", EBADF);
  return st_->fd;
}

// Takes ownership of fd (closed on failure) and wraps it.
Napi::Value Map::Adopt(Napi::Env env, int fd, const char* op) {
  bpf_map_info mi;
  memset(&mi, 0, sizeof mi);
  __u32 len = sizeof mi;
  int r = bpf_obj_get_info_by_fd(fd, &mi, &len);
  if (r) {
    int err = ErrOf(r);
    close(fd);
    ThrowBpf(env, std::string(op) + ": bpf_obj_get_info_by_fd", err);
  }
  Addon* a = Addon::Get(env);
  auto st = std::make_shared<MapState>();
  st->fd = fd;
  st->type = mi.type;
  st->keySize = mi.key_size;
  st->valueSize = mi.value_size;
  st->maxEntries = mi.max_entries;
  st->flags = mi.map_flags;
  st->id = mi.id;
  st->name = mi.name;
  st->addon = a;
  a->Track(st);
  Napi::Object o = a->mapCtor.New({});
  Map::Unwrap(o)->st_ = std::move(st);
  return o;
}

Napi::Value Map::FromFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = info[0].As<Napi::Number>().Int32Value();
  int nfd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
  if (nfd < 0) ThrowBpf(env, "dup(map fd " + std::to_string(fd) + ")", errno);
  return Adopt(env, nfd, "map");
}

Napi::Value Map::OpenPinned(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = info[0].As<Napi::String>();
  int fd = bpf_obj_get(path.c_str());
  if (fd < 0) ThrowBpf(env, "bpf_obj_get(" + path + ")", ErrOf(fd));
  // A pin may be a program or link: only maps have map_type in fdinfo.
  std::ifstream fi("/proc/self/fdinfo/" + std::to_string(fd));
  std::string line;
  bool isMap = false;
  while (std::getline(fi, line))
    if (line.rfind("map_type:", 0) == 0) isMap = true;
  if (!isMap) {
    close(fd);
    ThrowBpf(env, "openPinnedMap(" + path + "): not a map", EINVAL);
  }
  return Adopt(env, fd, ("openPinnedMap(" + path + ")").c_str());
}

// (type: string, keySize, valueSize, maxEntries, name, flags)
Napi::Value Map::Create(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string ts = info[0].As<Napi::String>();
  int type = MapTypeFromString(ts);
  if (type < 0) ThrowBpf(env, "createMap: unknown map type '" + ts + "'", EINVAL);
  uint32_t ks = info[1].As<Napi::Number>().Uint32Value();
  uint32_t vs = info[2].As<Napi::Number>().Uint32Value();
  uint32_t max = info[3].As<Napi::Number>().Uint32Value();
  std::string name = info.Length() > 4 && info[4].IsString() ? info[4].As<Napi::String>().Utf8Value() : "";
  uint32_t flags = info.Length() > 5 && info[5].IsNumber() ? info[5].As<Napi::Number>().Uint32Value() : 0;
  bpf_map_create_opts opts;
  memset(&opts, 0, sizeof opts);
  opts.sz = sizeof opts;
  opts.map_flags = flags;
  LogReset();
  int fd = bpf_map_create(static_cast<bpf_map_type>(type), name.empty() ? nullptr : name.c_str(), ks, vs, max,
                          &opts);
  if (fd < 0) ThrowBpf(env, "bpf_map_create(" + ts + ", " + name + ")", ErrOf(fd), LogTake());
  return Adopt(env, fd, "createMap");
}

size_t Map::ValueBytes() const {
  switch (st_->type) {
    case BPF_MAP_TYPE_PERCPU_HASH:
    case BPF_MAP_TYPE_PERCPU_ARRAY:
    case BPF_MAP_TYPE_LRU_PERCPU_HASH:
    case BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE: {
      int n = libbpf_num_possible_cpus();
      return ((st_->valueSize + 7) & ~7u) * static_cast<size_t>(n > 0 ? n : 1);
    }
    default:
      return st_->valueSize;
  }
}

Napi::Value Map::Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  FdOrThrow(env, "map.info");
  Napi::Object o = Napi::Object::New(env);
  o.Set("fd", st_->fd);
  o.Set("id", st_->id);
  o.Set("name", st_->name);
  o.Set("type", MapTypeName(static_cast<int>(st_->type)));
  o.Set("typeId", st_->type);
  o.Set("keySize", st_->keySize);
  o.Set("valueSize", st_->valueSize);
  o.Set("valueBytes", static_cast<double>(ValueBytes()));
  o.Set("maxEntries", st_->maxEntries);
  o.Set("flags", st_->flags);
  return o;
}

static void CheckLen(Napi::Env env, const std::string& op, const char* what, size_t got, size_t want) {
  if (got != want)
    ThrowBpf(env, op + ": " + what + " is " + std::to_string(got) + " bytes, map wants " + std::to_string(want),
             EINVAL);
}

Napi::Value Map::Lookup(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdOrThrow(env, "bpf_map_lookup_elem");
  auto key = info[0].As<Napi::Buffer<uint8_t>>();
  std::string op = "bpf_map_lookup_elem(" + st_->name + ")";
  CheckLen(env, op, "key", key.Length(), st_->keySize);
  std::vector<uint8_t> val(ValueBytes());
  int r = bpf_map_lookup_elem(fd, key.Data(), val.data());
  if (r) {
    int err = ErrOf(r);
    if (err == ENOENT) return env.Null();
    ThrowBpf(env, op, err);
  }
  return Napi::Buffer<uint8_t>::Copy(env, val.data(), val.size());
}

// (key, value, flags: 0 any | 1 noexist | 2 exist)
void Map::Update(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdOrThrow(env, "bpf_map_update_elem");
  auto key = info[0].As<Napi::Buffer<uint8_t>>();
  auto val = info[1].As<Napi::Buffer<uint8_t>>();
  uint64_t flags = info.Length() > 2 && info[2].IsNumber() ? info[2].As<Napi::Number>().Int64Value() : 0;
  std::string op = "bpf_map_update_elem(" + st_->name + ")";
  CheckLen(env, op, "key", key.Length(), st_->keySize);
  CheckLen(env, op, "value", val.Length(), ValueBytes());
  int r = bpf_map_update_elem(fd, key.Data(), val.Data(), flags);
  if (r) ThrowBpf(env, op, ErrOf(r));
}

Napi::Value Map::Delete(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdOrThrow(env, "bpf_map_delete_elem");
  auto key = info[0].As<Napi::Buffer<uint8_t>>();
  std::string op = "bpf_map_delete_elem(" + st_->name + ")";
  CheckLen(env, op, "key", key.Length(), st_->keySize);
  int r = bpf_map_delete_elem(fd, key.Data());
  if (r) {
    int err = ErrOf(r);
    if (err == ENOENT) return Napi::Boolean::New(env, false);
    ThrowBpf(env, op, err);
  }
  return Napi::Boolean::New(env, true);
}

// All keys, by BPF_MAP_GET_NEXT_KEY. Not a snapshot: keys added or removed meanwhile may be missed
// (a hash map restarts from its first key if the cursor key was deleted; the walk is capped).
Napi::Value Map::Keys(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdOrThrow(env, "bpf_map_get_next_key");
  std::string op = "bpf_map_get_next_key(" + st_->name + ")";
  Napi::Array out = Napi::Array::New(env);
  std::vector<uint8_t> cur(st_->keySize), next(st_->keySize);
  bool first = true;
  uint64_t cap = 2ull * st_->maxEntries + 16;
  uint32_t i = 0;
  for (uint64_t n = 0; n < cap; n++) {
    int r = bpf_map_get_next_key(fd, first ? nullptr : cur.data(), next.data());
    if (r) {
      int err = ErrOf(r);
      if (err == ENOENT) break;
      ThrowBpf(env, op, err);
    }
    out.Set(i++, Napi::Buffer<uint8_t>::Copy(env, next.data(), next.size()));
    cur.swap(next);
    first = false;
  }
  return out;
}

// (keys: Buffer of count*keySize, values: Buffer of count*valueBytes, count, flags) -> count.
// One BPF_MAP_UPDATE_BATCH where the kernel supports it for this map type, else a loop here.
Napi::Value Map::UpdateBatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdOrThrow(env, "bpf_map_update_batch");
  auto keys = info[0].As<Napi::Buffer<uint8_t>>();
  auto vals = info[1].As<Napi::Buffer<uint8_t>>();
  uint32_t count = info[2].As<Napi::Number>().Uint32Value();
  uint64_t flags = info.Length() > 3 && info[3].IsNumber() ? info[3].As<Napi::Number>().Int64Value() : 0;
  std::string op = "bpf_map_update_batch(" + st_->name + ")";
  size_t vb = ValueBytes();
  CheckLen(env, op, "keys", keys.Length(), static_cast<size_t>(count) * st_->keySize);
  CheckLen(env, op, "values", vals.Length(), static_cast<size_t>(count) * vb);
  if (count == 0) return Napi::Number::New(env, 0);
  bpf_map_batch_opts opts;
  memset(&opts, 0, sizeof opts);
  opts.sz = sizeof opts;
  opts.elem_flags = flags;
  __u32 n = count;
  int r = bpf_map_update_batch(fd, keys.Data(), vals.Data(), &n, &opts);
  if (!r) return Napi::Number::New(env, n);
  int err = ErrOf(r);
  if (!(err == ENOTSUPP || err == EOPNOTSUPP || err == EINVAL) || n != 0) {
    ThrowBpf(env, op + " (" + std::to_string(n) + " of " + std::to_string(count) + " done)", err);
  }
  // Not supported for this map type (or kernel): one update per element.
  for (uint32_t i = 0; i < count; i++) {
    r = bpf_map_update_elem(fd, keys.Data() + static_cast<size_t>(i) * st_->keySize, vals.Data() + i * vb, flags);
    if (r)
      ThrowBpf(env, "bpf_map_update_elem(" + st_->name + ") in batch (" + std::to_string(i) + " of " +
                        std::to_string(count) + " done)",
               ErrOf(r));
  }
  return Napi::Number::New(env, count);
}

void Map::Pin(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdOrThrow(env, "bpf_obj_pin");
  std::string path = info[0].As<Napi::String>();
  int r = bpf_obj_pin(fd, path.c_str());
  if (r) ThrowBpf(env, "bpf_obj_pin(" + st_->name + ", " + path + ")", ErrOf(r));
}

void Map::CloseJs(const Napi::CallbackInfo& info) {
  (void)info;
  if (st_) st_->Close();
}

}  // namespace bridle
