#include "calib/statistics_across_ranks.h"

#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#include "formats/error.h"
#include "formats/ranks.h"

namespace kvfold {
namespace {

// Values and vectors of trivially copyable values as raw bytes; vectors with their length.
class Writer {
 public:
  template <class T>
  void Value(const T& v) {
    static_assert(std::is_trivially_copyable_v<T>);
    bytes_.append(reinterpret_cast<const char*>(&v), sizeof v);
  }
  template <class T>
  void Vector(const std::vector<T>& v) {
    static_assert(std::is_trivially_copyable_v<T>);
    Value(static_cast<std::uint64_t>(v.size()));
    bytes_.append(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
  }
  std::string Take() { return std::move(bytes_); }

 private:
  std::string bytes_;
};

class Reader {
 public:
  explicit Reader(const std::string& bytes) : bytes_(bytes) {}
  template <class T>
  void Value(T& v) {
    Copy(&v, sizeof v);
  }
  template <class T>
  void Vector(std::vector<T>& v) {
    std::uint64_t n = 0;
    Value(n);
    if (n > (bytes_.size() - at_) / sizeof(T)) Broken();
    v.resize(n);
    Copy(v.data(), n * sizeof(T));
  }
  void End() const {
    if (at_ != bytes_.size()) Broken();
  }

 private:
  void Copy(void* to, std::size_t n) {
    if (n > bytes_.size() - at_) Broken();
    if (n != 0) std::memcpy(to, bytes_.data() + at_, n);
    at_ += n;
  }
  [[noreturn]] static void Broken() {
    Fail("ranks", "internal: statistics from another rank do not parse");
  }
  const std::string& bytes_;
  std::size_t at_ = 0;
};

template <class IO, class S>
void LayerFields(IO& io, S& s) {
  io.Vector(s.key_pre_rope);
  io.Vector(s.key_post_rope);
  io.Vector(s.value);
  io.Vector(s.query_energy);
  io.Vector(s.norm_attention);
  io.Vector(s.key_min);
  io.Vector(s.key_max);
  io.Vector(s.value_min);
  io.Vector(s.value_max);
  io.Vector(s.query_pair_max);
  io.Vector(s.key_pair_max);
}

template <class IO, class P>
void PartFields(IO& io, P& p) {
  io.Value(p.tokens);
  io.Vector(p.cc);
  io.Vector(p.cs);
  io.Vector(p.ss);
}

// Every rank's `s`, merged in rank order by T::Merge, in place of this rank's. Each copy is freed
// as soon as it is packed or unpacked: a 70B layer's refit moments are 3 GiB.
template <class T>
void Join(T& s) {
  if (RankCount() == 1) return;
  std::string mine = Pack(s);
  s = T();
  const std::string joined =
      JoinInRankOrder(std::move(mine), [](std::string so_far, const std::string& next) {
        T a;
        Unpack(so_far, a);
        std::string().swap(so_far);
        T b;
        Unpack(next, b);
        a.Merge(std::move(b));
        return Pack(a);
      });
  Unpack(joined, s);
}

}  // namespace

std::string Pack(const LayerKvStatistics& s) {
  Writer w;
  LayerFields(w, s);
  return w.Take();
}

void Unpack(const std::string& bytes, LayerKvStatistics& s) {
  Reader r(bytes);
  LayerFields(r, s);
  r.End();
}

std::string Pack(const KvStatistics& s) {
  Writer w;
  w.Value(s.collected);
  w.Value(s.tokens);
  w.Value(s.windows);
  w.Value(s.kv_heads);
  w.Value(s.head_dim);
  w.Value(s.hidden);
  w.Value(static_cast<std::uint64_t>(s.input_moments.size()));
  for (const auto& [pair, moment] : s.input_moments) {
    w.Value(pair.first);
    w.Value(pair.second);
    w.Vector(moment);
  }
  w.Value(static_cast<std::uint64_t>(s.layers.size()));
  for (const auto& layer : s.layers) LayerFields(w, layer);
  return w.Take();
}

void Unpack(const std::string& bytes, KvStatistics& s) {
  Reader r(bytes);
  r.Value(s.collected);
  r.Value(s.tokens);
  r.Value(s.windows);
  r.Value(s.kv_heads);
  r.Value(s.head_dim);
  r.Value(s.hidden);
  std::uint64_t n = 0;
  r.Value(n);
  s.input_moments.clear();
  for (std::uint64_t i = 0; i < n; ++i) {
    LayerPair pair;
    r.Value(pair.first);
    r.Value(pair.second);
    r.Vector(s.input_moments[pair]);
  }
  r.Value(n);
  if (n > bytes.size()) Fail("ranks", "internal: statistics from another rank do not parse");
  s.layers.assign(n, LayerKvStatistics());
  for (auto& layer : s.layers) LayerFields(r, layer);
  r.End();
}

std::string Pack(const OutputRefitMoments& m) {
  Writer w;
  w.Value(m.dim);
  PartFields(w, m.fit);
  PartFields(w, m.held_out);
  return w.Take();
}

void Unpack(const std::string& bytes, OutputRefitMoments& m) {
  Reader r(bytes);
  r.Value(m.dim);
  PartFields(r, m.fit);
  PartFields(r, m.held_out);
  r.End();
}

std::string Pack(const HealWindows& w) {
  Writer io;
  io.Value(w.T);
  io.Value(w.D);
  io.Value(w.HD);
  io.Vector(w.sequences);
  io.Vector(w.input.All());
  io.Vector(w.context.All());
  io.Vector(w.residual.All());
  return io.Take();
}

void Unpack(const std::string& bytes, HealWindows& w, const std::shared_ptr<MemoryBudget>& budget) {
  Reader io(bytes);
  std::int64_t T = 0, D = 0, HD = 0;
  std::vector<std::int64_t> sequences;
  std::vector<float> input, context, residual;
  io.Value(T);
  io.Value(D);
  io.Value(HD);
  io.Vector(sequences);
  io.Vector(input);
  io.Vector(context);
  io.Vector(residual);
  io.End();
  w = MakeHealWindows(T, D, HD, std::move(sequences), input, context, residual, budget);
}

void JoinAcrossRanks(LayerKvStatistics& s) { Join(s); }
void JoinAcrossRanks(KvStatistics& s) { Join(s); }
void JoinAcrossRanks(OutputRefitMoments& m) { Join(m); }
void JoinAcrossRanks(HealWindows& w, const std::shared_ptr<MemoryBudget>& budget) {
  if (RankCount() == 1) return;
  std::string mine = Pack(w);
  w = HealWindows();
  const std::string joined =
      JoinInRankOrder(std::move(mine), [&budget](std::string so_far, const std::string& next) {
        HealWindows a, b;
        Unpack(so_far, a, budget);
        std::string().swap(so_far);
        Unpack(next, b, budget);
        a.Merge(std::move(b));
        return Pack(a);
      });
  Unpack(joined, w, budget);
}

}  // namespace kvfold
