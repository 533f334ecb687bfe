// Context: one device, its allocator, its stream (CUDA) or worker pool (CPU), and the queue of recorded ops.
// Several contexts can live in one process (no global state); each model owns one.
//
// Execution model: an op call validates its arguments at once (bad shapes throw synchronously, with the
// shapes in the message) and appends a closure to the context's queue. flush() runs the queue: on the CPU
// it computes, on CUDA it launches onto the context's stream and then waits for it. flush() may run on a
// worker thread (AsyncWorker) so that long work never blocks the JS thread. Reading a tensor flushes first.
// A captured Plan is a queue kept for replay: on CUDA the first replay is captured into a CUDA graph and
// later replays launch that graph (about 400 launches a token cost more than the weight reads otherwise).
#pragma once
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "tensor.h"

namespace glm4 {

class Context;
using Op = std::function<void(Context&)>;

// Persistent worker threads for the CPU backend.
class ThreadPool {
 public:
  explicit ThreadPool(int n);
  ~ThreadPool();
  int size() const { return static_cast<int>(workers_.size()) + 1; }
  // fn(begin, end) over [0, n) in contiguous chunks, run on the pool and the calling thread.
  void parallel_for(int64_t n, int64_t min_chunk, const std::function<void(int64_t, int64_t)>& fn);

 private:
  void loop(int id);
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_, done_cv_;
  const std::function<void(int64_t, int64_t)>* job_ = nullptr;
  int64_t n_ = 0, chunk_ = 0;
  std::atomic<int64_t> next_{0};
  int generation_ = 0, active_ = 0;
  bool stop_ = false;
};

struct Plan {
  std::vector<Op> ops;
  std::vector<const char*> names;  // op names, for profiles
  void* graph_exec = nullptr;  // cudaGraphExec_t once captured
  void* graph = nullptr;       // cudaGraph_t
  Device device;
  ~Plan();
};

class Context : public std::enable_shared_from_this<Context> {
 public:
  static std::shared_ptr<Context> create(Device d, int threads = 0);
  ~Context();

  Device device() const { return device_; }
  const std::shared_ptr<Allocator>& allocator() const { return alloc_; }
  Tensor empty(DType dt, const std::vector<int64_t>& shape) { return glm4::empty(alloc_, dt, shape); }

  void enqueue(Op op, const char* name = "op");
  void flush();  // runs everything recorded so far; rethrows the first failure
  bool capturing() const { return capture_ != nullptr; }
  void begin_capture();
  std::shared_ptr<Plan> end_capture();
  void replay(const std::shared_ptr<Plan>& plan);  // records a replay of the plan
  // Runs each op of the plan on its own `reps` times (device-timed on CUDA) and returns the mean
  // milliseconds per op, in plan order. For the bench's per-op decode profile; not for the hot path.
  std::vector<std::pair<std::string, double>> profile(Plan& plan, int reps);
  // CUDA: records the plan's launches into a CUDA graph and instantiates it now, which the first replay does
  // otherwise (tens of ms for a 40-layer step); CPU: nothing. For endCaptureAsync, on a worker thread.
  void instantiate(Plan& plan);
  // Runs fn holding the execution lock (no flush, profile or dispose runs meanwhile); ERR_GLM4_DISPOSED once the
  // context is disposed. For uploads on a worker thread.
  void exclusive(const std::function<void()>& fn);

  // Copies between host memory and a tensor of this context (flushes first on reads).
  void upload(const Tensor& dst, const void* src, int64_t bytes);    // immediate (dst must be unused)
  void write(const Tensor& dst, std::vector<uint8_t> bytes);         // recorded
  void download(const Tensor& src, void* dst, int64_t bytes);        // flushes, then copies

  ThreadPool& pool();
  void* stream() const { return stream_; }  // cudaStream_t on CUDA
  void* scratch(int64_t bytes);             // device scratch owned by the context, grown on demand
  // A device buffer of at least `bytes` per `tag`, grown on demand, for ops that need scratch beyond their
  // arguments (attention's split-K partials). Taken when the op is recorded, not when it runs, and kept by the
  // recorded op: a plan captured with an older, smaller buffer keeps that one alive. The ops of one context run
  // in order, so they may share it. `fresh` (optional) is set when the buffer was just allocated (contents
  // undefined); the tag's users agree on what they leave in it.
  Tensor workspace(const std::string& tag, int64_t bytes, bool* fresh = nullptr);
  bool disposed() const { return disposed_; }
  void dispose();

 private:
  explicit Context(Device d, int threads);
  void run_ops(std::vector<Op>& ops);
  void run_plan(Plan& plan);
  Device device_;
  std::shared_ptr<Allocator> alloc_;
  std::mutex queue_mu_, exec_mu_;
  std::vector<Op> queue_;
  std::unique_ptr<std::vector<Op>> capture_;
  std::vector<const char*> capture_names_;
  std::unique_ptr<ThreadPool> pool_;
  int threads_ = 0;
  void* stream_ = nullptr;
  Tensor scratch_;
  std::map<std::string, Tensor> workspaces_;
  bool disposed_ = false;
};

}  // namespace glm4
