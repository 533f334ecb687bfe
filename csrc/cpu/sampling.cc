// argmax, softmax and sampling (temperature, top-k, top-p, min-p) for one row per sequence.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "common.h"
#include "ops.h"

namespace glm4 {
namespace cpu {

void argmax(Context&, const Tensor& out, const Tensor& x) {
  const int64_t m = x.dim(0), v = x.dim(1);
  for (int64_t i = 0; i < m; ++i) {
    const float* r = x.data<float>() + i * v;
    int64_t best = 0;
    for (int64_t j = 1; j < v; ++j)
      if (r[j] > r[best] || (std::isnan(r[j]) && !std::isnan(r[best]))) best = j;
    out.data<int32_t>()[i] = static_cast<int32_t>(best);
  }
}

void softmax(Context&, const Tensor& out, const Tensor& x, float temperature) {
  const int64_t m = x.dim(0), v = x.dim(1);
  for (int64_t i = 0; i < m; ++i) {
    const float* r = x.data<float>() + i * v;
    float* o = out.data<float>() + i * v;
    float mx = -INFINITY;
    for (int64_t j = 0; j < v; ++j) mx = std::max(mx, r[j] / temperature);
    double sum = 0;
    for (int64_t j = 0; j < v; ++j) sum += (o[j] = std::exp(r[j] / temperature - mx));
    for (int64_t j = 0; j < v; ++j) o[j] = static_cast<float>(o[j] / sum);
  }
}

// Repetition penalty (CTRL, as in HF transformers): a listed token's logit is divided by the penalty when it is
// positive, multiplied by it otherwise, in f32 (the CUDA kernels use the same IEEE operations: bit for bit).
// Recomputed from the original logit, so a token listed twice is penalized once.
static inline float penalize(float v, float p) { return v > 0.f ? v / p : v * p; }

// Candidates sorted by probability (descending, ties by lower id), cut by top-k, then min-p (relative to the
// best), then top-p (smallest prefix whose mass reaches p), renormalized; u picks by inverse CDF. With penalty
// ids, the row's listed tokens are penalized first (params[i][4]); ids outside [0, V) and entries past the row's
// length (clamped to [0, L]) are ignored.
// Rows are independent: split over the pool's threads (each row computed by one thread, in the same order).
void sample(Context& c, const Tensor& out, const Tensor& logits, const Tensor& params, const Tensor& top_k,
            const Tensor& penalty_ids, const Tensor& penalty_len) {
  const int64_t m = logits.dim(0), v = logits.dim(1), pc = params.dim(1);
  const bool pen = penalty_ids.defined();
  const int64_t L = pen ? penalty_ids.dim(1) : 0;
  c.pool().parallel_for(m, 1, [&](int64_t row_begin, int64_t row_end) {
    std::vector<int32_t> idx(v);
    std::vector<double> pr(v);
    std::vector<float> penalized(pen ? v : 0);
    for (int64_t i = row_begin; i < row_end; ++i) {
      const float* r = logits.data<float>() + i * v;
      const float* prm = params.data<float>() + i * pc;
      const float temp = prm[0], top_p = prm[1], min_p = prm[2], u = prm[3];
      if (pen) {
        const float p = prm[4];
        std::copy(r, r + v, penalized.begin());
        const int32_t* ids = penalty_ids.data<int32_t>() + i * L;
        const int64_t n = std::clamp<int64_t>(penalty_len.data<int32_t>()[i], 0, L);
        for (int64_t j = 0; j < n; ++j)
          if (ids[j] >= 0 && ids[j] < v) penalized[ids[j]] = penalize(r[ids[j]], p);
        r = penalized.data();
      }
      int32_t* o = out.data<int32_t>() + i;
      if (!(temp > 0.f)) {
        int64_t best = 0;
        for (int64_t j = 1; j < v; ++j)
          if (r[j] > r[best]) best = j;
        *o = static_cast<int32_t>(best);
        continue;
      }
      double mx = -INFINITY;
      for (int64_t j = 0; j < v; ++j) mx = std::max(mx, static_cast<double>(r[j]) / temp);
      double sum = 0;
      for (int64_t j = 0; j < v; ++j) sum += (pr[j] = std::exp(static_cast<double>(r[j]) / temp - mx));
      for (int64_t j = 0; j < v; ++j) pr[j] /= sum;
      std::iota(idx.begin(), idx.end(), 0);
      std::stable_sort(idx.begin(), idx.end(), [&](int32_t a, int32_t b) { return pr[a] > pr[b]; });
      int64_t keep = v;
      const int32_t k = top_k.data<int32_t>()[i];
      if (k > 0) keep = std::min<int64_t>(keep, k);
      if (min_p > 0.f) {
        const double floor = min_p * pr[idx[0]];
        int64_t n = 1;
        while (n < keep && pr[idx[n]] >= floor) ++n;
        keep = n;
      }
      if (top_p > 0.f && top_p < 1.f) {
        double cum = 0;
        int64_t n = 0;
        while (n < keep) {
          cum += pr[idx[n++]];
          if (cum >= top_p) break;
        }
        keep = std::max<int64_t>(n, 1);
      }
      double mass = 0;
      for (int64_t j = 0; j < keep; ++j) mass += pr[idx[j]];
      const double target = static_cast<double>(u) * mass;
      double cum = 0;
      int32_t pick = idx[keep - 1];
      for (int64_t j = 0; j < keep; ++j) {
        cum += pr[idx[j]];
        if (target < cum) {
          pick = idx[j];
          break;
        }
      }
      *o = pick;
    }
  });
}

}  // namespace cpu
}  // namespace glm4
