#include "context.h"

#include <algorithm>
#include <chrono>
#include <cstring>

#include "backend_cuda.h"

namespace glm4 {

// ---------------- ThreadPool ----------------
ThreadPool::ThreadPool(int n) {
  for (int i = 1; i < n; ++i) workers_.emplace_back([this, i] { loop(i); });
}
ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  for (auto& t : workers_) t.join();
}
void ThreadPool::loop(int) {
  int seen = 0;
  for (;;) {
    const std::function<void(int64_t, int64_t)>* job;
    int64_t n, chunk;
    {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
      job = job_;
      n = n_;
      chunk = chunk_;
      ++active_;
    }
    if (job)
      for (int64_t b; (b = next_.fetch_add(chunk)) < n;) (*job)(b, std::min(n, b + chunk));
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (--active_ == 0) done_cv_.notify_all();
    }
  }
}
void ThreadPool::parallel_for(int64_t n, int64_t min_chunk, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  const int64_t parts = size();
  int64_t chunk = std::max<int64_t>(min_chunk, (n + parts * 4 - 1) / (parts * 4));
  if (workers_.empty() || n <= chunk) {
    fn(0, n);
    return;
  }
  {
    std::lock_guard<std::mutex> lk(mu_);
    job_ = &fn;
    n_ = n;
    chunk_ = chunk;
    next_.store(0);
    ++generation_;
  }
  cv_.notify_all();
  for (int64_t b; (b = next_.fetch_add(chunk)) < n;) fn(b, std::min(n, b + chunk));
  std::unique_lock<std::mutex> lk(mu_);
  // Workers that woke late find no chunk left; wait until every one that started has finished.
  done_cv_.wait(lk, [&] { return active_ == 0; });
  job_ = nullptr;
}

// ---------------- Plan ----------------
Plan::~Plan() {
  if (graph || graph_exec) cudart::graph_destroy(graph, graph_exec);
}

// ---------------- Context ----------------
std::shared_ptr<Context> Context::create(Device d, int threads) {
  return std::shared_ptr<Context>(new Context(d, threads));
}

Context::Context(Device d, int threads) : device_(d), threads_(threads) {
  if (d.type == DeviceType::CUDA) {
    GLM4_CHECK(cudart::compiled(), GLM4_E_NO_CUDA, "this build of the addon has no CUDA backend; use device \"cpu\"");
    auto devs = cudart::devices();
    GLM4_CHECK(d.index >= 0 && d.index < static_cast<int>(devs.size()), GLM4_E_NO_CUDA, "no CUDA device ", d.index, " (",
               devs.size(), " found; ", cudart::status(), ")");
    alloc_ = cudart::make_allocator(d.index);
    stream_ = cudart::stream_create(d.index);
  } else {
    alloc_ = std::make_shared<CpuAllocator>();
  }
}

Context::~Context() { dispose(); }

void Context::dispose() {
  if (disposed_) return;
  try {
    flush();
  } catch (...) {
  }
  std::lock_guard<std::mutex> lk(exec_mu_);
  scratch_ = Tensor();
  workspaces_.clear();
  pool_.reset();
  if (stream_) {
    try {
      cudart::stream_sync(device_.index, stream_);
    } catch (...) {
    }
  }
  if (alloc_) alloc_->trim();  // blocks cached for reuse go back now, not when the last tensor is collected
  if (stream_) cudart::stream_destroy(device_.index, stream_);
  stream_ = nullptr;
  disposed_ = true;
}

ThreadPool& Context::pool() {
  if (!pool_) {
    int n = threads_ > 0 ? threads_ : static_cast<int>(std::thread::hardware_concurrency());
    pool_ = std::make_unique<ThreadPool>(std::max(1, std::min(n, 64)));
  }
  return *pool_;
}

void* Context::scratch(int64_t bytes) {
  if (!scratch_.defined() || scratch_.nbytes() < bytes) scratch_ = empty(DType::U8, {std::max<int64_t>(bytes, 1 << 20)});
  return scratch_.raw();
}

Tensor Context::workspace(const std::string& tag, int64_t bytes, bool* fresh) {
  std::lock_guard<std::mutex> lk(queue_mu_);
  GLM4_CHECK(!disposed_, GLM4_E_DISPOSED, "the context was disposed");
  Tensor& w = workspaces_[tag];
  const bool grow = !w.defined() || w.nbytes() < bytes;
  if (grow) w = empty(DType::U8, {std::max<int64_t>(bytes, 1 << 16)});
  if (fresh) *fresh = grow;
  return w;
}

void Context::enqueue(Op op, const char* name) {
  GLM4_CHECK(!disposed_, GLM4_E_DISPOSED, "the context was disposed");
  std::lock_guard<std::mutex> lk(queue_mu_);
  if (capture_) {
    capture_->push_back(std::move(op));
    capture_names_.push_back(name);
  } else {
    queue_.push_back(std::move(op));
  }
}

std::vector<std::pair<std::string, double>> Context::profile(Plan& plan, int reps) {
  flush();
  std::lock_guard<std::mutex> ex(exec_mu_);
  std::vector<double> ms(plan.ops.size(), 0.0);
  const bool gpu = device_.type == DeviceType::CUDA;
  void* a = gpu ? cudart::event_create(device_.index) : nullptr;
  void* b = gpu ? cudart::event_create(device_.index) : nullptr;
  try {
    for (int r = 0; r < reps; ++r) {
      for (size_t i = 0; i < plan.ops.size(); ++i) {
        if (gpu) {
          cudart::event_record(device_.index, a, stream_);
          plan.ops[i](*this);
          cudart::event_record(device_.index, b, stream_);
          ms[i] += cudart::event_elapsed_ms(device_.index, a, b);
        } else {
          auto t0 = std::chrono::steady_clock::now();
          plan.ops[i](*this);
          ms[i] += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
        }
      }
    }
  } catch (...) {
    if (gpu) { cudart::event_destroy(a); cudart::event_destroy(b); }
    throw;
  }
  if (gpu) { cudart::event_destroy(a); cudart::event_destroy(b); }
  std::vector<std::pair<std::string, double>> out;
  for (size_t i = 0; i < ms.size(); ++i)
    out.emplace_back(i < plan.names.size() ? plan.names[i] : "op", ms[i] / std::max(1, reps));
  return out;
}

void Context::run_ops(std::vector<Op>& ops) {
  for (auto& op : ops) op(*this);
}

void Context::flush() {
  std::lock_guard<std::mutex> ex(exec_mu_);
  std::vector<Op> ops;
  {
    std::lock_guard<std::mutex> lk(queue_mu_);
    ops.swap(queue_);
  }
  if (disposed_) return;
  try {
    run_ops(ops);
  } catch (...) {
    if (device_.type == DeviceType::CUDA) {
      try { cudart::stream_sync(device_.index, stream_); } catch (...) {}
    }
    throw;
  }
  if (device_.type == DeviceType::CUDA) cudart::stream_sync(device_.index, stream_);
}

void Context::begin_capture() {
  std::lock_guard<std::mutex> lk(queue_mu_);
  GLM4_CHECK(!capture_, GLM4_E_INVALID_ARG, "begin_capture: a capture is already open");
  capture_ = std::make_unique<std::vector<Op>>();
}

std::shared_ptr<Plan> Context::end_capture() {
  std::lock_guard<std::mutex> lk(queue_mu_);
  GLM4_CHECK(capture_ != nullptr, GLM4_E_INVALID_ARG, "end_capture: no capture is open");
  auto plan = std::make_shared<Plan>();
  plan->ops = std::move(*capture_);
  plan->names = std::move(capture_names_);
  plan->device = device_;
  capture_.reset();
  capture_names_.clear();
  return plan;
}

void Context::run_plan(Plan& plan) {
  if (device_.type != DeviceType::CUDA) {
    run_ops(plan.ops);
    return;
  }
  if (!plan.graph_exec) {
    // First replay: record the plan's launches into a CUDA graph, then launch it. Ops of a plan only launch
    // kernels on the stream (no allocation, no synchronization), which is what stream capture needs.
    cudart::graph_capture(device_.index, stream_, [&] { run_ops(plan.ops); }, &plan.graph, &plan.graph_exec);
  }
  cudart::graph_launch(device_.index, stream_, plan.graph_exec);
}

void Context::instantiate(Plan& plan) {
  std::lock_guard<std::mutex> ex(exec_mu_);
  GLM4_CHECK(!disposed_, GLM4_E_DISPOSED, "instantiate: the context was disposed");
  GLM4_CHECK(plan.device == device_, GLM4_E_DEVICE, "instantiate: the plan belongs to another device");
  if (device_.type != DeviceType::CUDA || plan.graph_exec) return;
  cudart::graph_capture(device_.index, stream_, [&] { run_ops(plan.ops); }, &plan.graph, &plan.graph_exec);
}

void Context::exclusive(const std::function<void()>& fn) {
  std::lock_guard<std::mutex> ex(exec_mu_);
  GLM4_CHECK(!disposed_, GLM4_E_DISPOSED, "the context was disposed");
  fn();
}

void Context::replay(const std::shared_ptr<Plan>& plan) {
  GLM4_CHECK(plan && plan->device == device_, GLM4_E_DEVICE, "replay: the plan belongs to another device");
  enqueue([plan](Context& c) { c.run_plan(*plan); }, "replay");
}

void Context::upload(const Tensor& dst, const void* src, int64_t bytes) {
  GLM4_CHECK(bytes == dst.nbytes(), GLM4_E_SHAPE, "upload: ", bytes, " bytes given for ", dst.describe(), " (",
             dst.nbytes(), " bytes)");
  if (device_.type == DeviceType::CUDA)
    cudart::memcpy_h2d(device_.index, dst.raw(), src, bytes, stream_, true);
  else
    std::memcpy(dst.raw(), src, static_cast<size_t>(bytes));
}

void Context::write(const Tensor& dst, std::vector<uint8_t> bytes) {
  GLM4_CHECK(static_cast<int64_t>(bytes.size()) == dst.nbytes(), GLM4_E_SHAPE, "write: ", bytes.size(),
             " bytes given for ", dst.describe(), " (", dst.nbytes(), " bytes)");
  GLM4_CHECK(!capturing(), GLM4_E_INVALID_ARG, "write: host writes cannot be part of a captured plan");
  auto data = std::make_shared<std::vector<uint8_t>>(std::move(bytes));
  enqueue([dst, data](Context& c) {
    if (c.device().type == DeviceType::CUDA)
      cudart::memcpy_h2d(c.device().index, dst.raw(), data->data(), static_cast<int64_t>(data->size()), c.stream(), false);
    else
      std::memcpy(dst.raw(), data->data(), data->size());
  });
}

void Context::download(const Tensor& src, void* dst, int64_t bytes) {
  GLM4_CHECK(bytes == src.nbytes(), GLM4_E_SHAPE, "download: buffer of ", bytes, " bytes for ", src.describe());
  flush();
  std::lock_guard<std::mutex> ex(exec_mu_);
  if (device_.type == DeviceType::CUDA)
    cudart::memcpy_d2h(device_.index, dst, src.raw(), bytes, stream_);
  else
    std::memcpy(dst, src.raw(), static_cast<size_t>(bytes));
}

}  // namespace glm4
