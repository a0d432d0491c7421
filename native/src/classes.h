// The JS-visible native classes. Raw methods are `__`-prefixed; src/kernel/binding.ts wraps them.
// Each wrapper holds a shared_ptr to a state object that the Addon also tracks, so a resource is closed
// exactly once: by JS (close()), by its owner (an object closing its links), by GC, or at env teardown.
#pragma once

#include <bpf/libbpf.h>

#include <vector>

#include "common.h"

namespace bridle {

// ---------------------------------------------------------------------------------------------------
// Link: a bpf_link. Links made by an object belong to it: the object's close() destroys the ones that
// are still open (a pinned link is only released, so the pin keeps the attachment).
struct LinkState : Resource {
  bpf_link* link = nullptr;
  bool pinned = false;
  std::string pinPath;
  Addon* addon = nullptr;
  void Close() override;  // main thread; detaches unless pinned
};

class Link : public Napi::ObjectWrap<Link> {
 public:
  static Napi::Function Init(Napi::Env env);
  // Main thread. Wraps a freshly created link; the returned JS object is a Link.
  static Napi::Object Wrap(Napi::Env env, std::shared_ptr<LinkState> st);
  explicit Link(const Napi::CallbackInfo& info);
  ~Link() override;

 private:
  Napi::Value Fd(const Napi::CallbackInfo& info);       // main thread
  void Pin(const Napi::CallbackInfo& info);             // main thread
  void Unpin(const Napi::CallbackInfo& info);           // main thread
  void Detach(const Napi::CallbackInfo& info);          // main thread; BPF_LINK_DETACH, even if pinned
  void CloseJs(const Napi::CallbackInfo& info);         // main thread
  Napi::Value Info(const Napi::CallbackInfo& info);     // main thread
  bpf_link* Need(Napi::Env env, const char* op);
  std::shared_ptr<LinkState> st_;
};

// ---------------------------------------------------------------------------------------------------
// Object: a bpf_object from an ELF file, through open -> configure -> load -> attach.
struct ObjectState : Resource {
  bpf_object* obj = nullptr;
  bool loaded = false;
  std::vector<std::shared_ptr<LinkState>> links;
  Addon* addon = nullptr;
  void Close() override;  // main thread; closes its open links first
};

class Object : public Napi::ObjectWrap<Object> {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit Object(const Napi::CallbackInfo& info);
  ~Object() override;  // GC: closes the object (and its links) if JS did not

 private:
  static Napi::Value Open(const Napi::CallbackInfo& info);  // main thread; (path, name?) -> Object
  void SetGlobal(const Napi::CallbackInfo& info);           // main thread; before load
  void ReuseMap(const Napi::CallbackInfo& info);            // main thread; before load
  void SetMaxEntries(const Napi::CallbackInfo& info);       // main thread; before load
  void SetAutoload(const Napi::CallbackInfo& info);         // main thread; before load
  void SetProgType(const Napi::CallbackInfo& info);         // main thread; before load
  void Load(const Napi::CallbackInfo& info);                // main thread; runs the verifier
  Napi::Value Programs(const Napi::CallbackInfo& info);     // main thread
  Napi::Value Maps(const Napi::CallbackInfo& info);         // main thread
  Napi::Value ProgFd(const Napi::CallbackInfo& info);       // main thread
  Napi::Value MapFd(const Napi::CallbackInfo& info);        // main thread; borrowed fd, -1 before load
  Napi::Value Attach(const Napi::CallbackInfo& info);       // main thread; auto-attach by section
  Napi::Value AttachCgroup(const Napi::CallbackInfo& info); // main thread; BPF link on a cgroup v2 dir
  Napi::Value IterRead(const Napi::CallbackInfo& info);     // main thread; blocking read of the iterator
  Napi::Value IsLoaded(const Napi::CallbackInfo& info);     // main thread
  void CloseJs(const Napi::CallbackInfo& info);             // main thread; idempotent

  bpf_object* Need(Napi::Env env, const char* op);
  bpf_program* Prog(Napi::Env env, const std::string& name, const char* op);
  bpf_map* MapByName(Napi::Env env, const std::string& name, const char* op);
  Napi::Value TrackLink(Napi::Env env, bpf_link* link);
  std::shared_ptr<ObjectState> st_;
};

// ---------------------------------------------------------------------------------------------------
// Map: an owned fd to a BPF map (dup of an object's map fd, a pinned map, or a created map). It stays
// usable after the object that made it is closed; close() releases the fd.
struct MapState : Resource {
  int fd = -1;
  uint32_t type = 0, keySize = 0, valueSize = 0, maxEntries = 0, flags = 0, id = 0;
  std::string name;
  Addon* addon = nullptr;
  void Close() override;  // main thread
};

class Map : public Napi::ObjectWrap<Map> {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit Map(const Napi::CallbackInfo& info);
  ~Map() override;
  // Main thread. The map's fd, or throws a BpfError (EBADF) if closed.
  int FdOrThrow(Napi::Env env, const char* op);
  static Map* FromValue(Napi::Value v);  // nullptr if v is not a native Map

 private:
  static Napi::Value FromFd(const Napi::CallbackInfo& info);     // main thread; dup(fd)
  static Napi::Value OpenPinned(const Napi::CallbackInfo& info); // main thread; bpf_obj_get
  static Napi::Value Create(const Napi::CallbackInfo& info);     // main thread; bpf_map_create
  static Napi::Value Adopt(Napi::Env env, int fd, const char* op);

  Napi::Value Info(const Napi::CallbackInfo& info);         // main thread
  Napi::Value Lookup(const Napi::CallbackInfo& info);       // main thread
  void Update(const Napi::CallbackInfo& info);              // main thread
  Napi::Value Delete(const Napi::CallbackInfo& info);       // main thread
  Napi::Value Keys(const Napi::CallbackInfo& info);         // main thread
  Napi::Value UpdateBatch(const Napi::CallbackInfo& info);  // main thread
  void Pin(const Napi::CallbackInfo& info);                 // main thread
  void CloseJs(const Napi::CallbackInfo& info);             // main thread
  size_t ValueBytes() const;  // value size as seen by user space (per-CPU maps: one slot per CPU)

  std::shared_ptr<MapState> st_;
};

// ---------------------------------------------------------------------------------------------------
Napi::Function RingBufferInit(Napi::Env env);  // ringbuf.cc

}  // namespace bridle
