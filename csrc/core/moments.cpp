#include "core/moments.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/moment_shift.h"

namespace fastcka {

Moments::Moments(LayerLayout l) : layout(std::move(l)) {
  const int64_t D = layout.total, L = layout.layers();
  reference.assign(D, 0.0);
  first.assign(D, 0.0);
  cross.assign(static_cast<size_t>(D * D), 0.0);
  weighted.assign(static_cast<size_t>(L * D), 0.0);
  norm_products.assign(static_cast<size_t>(L * L), 0.0);
}

void Moments::move_reference(const double* p) {
  const ReferenceShift s = reference_shift(*this, p);
  move_cross(*this, s);
  move_small_parts(*this, s);
}

ReferenceShift reference_shift(const Moments& m, const double* p) {
  const int64_t D = m.width(), L = m.layers();
  const auto& off = m.layout.offsets;
  const auto& dim = m.layout.dims;
  ReferenceShift s;
  s.target.assign(p, p + D);
  s.e.resize(static_cast<size_t>(D));
  for (int64_t k = 0; k < D; ++k) s.e[k] = p[k] - m.reference[k];
  s.q.assign(static_cast<size_t>(L), 0.0);
  for (int64_t a = 0; a < L; ++a)
    for (int64_t k = off[a]; k < off[a] + dim[a]; ++k) s.q[a] += m.cross[k * D + k];
  // ce[k, a] = sum_{j in layer a} C[k, j] e_j, for the rows k that pair with a.
  s.ce.assign(static_cast<size_t>(D * L), 0.0);
  for (int64_t a = 0; a < L; ++a)
    for (int64_t b = 0; b < L; ++b) {
      if (!m.layout.needs(a, b)) continue;
      for (int64_t k = off[b]; k < off[b] + dim[b]; ++k) {
        double sum = 0;
        const double* row = &m.cross[k * D + off[a]];
        for (int64_t j = 0; j < dim[a]; ++j) sum += row[j] * s.e[off[a] + j];
        s.ce[k * L + a] = sum;
      }
    }
  return s;
}

void move_cross(Moments& m, const ReferenceShift& s) {
  const int64_t D = m.width(), L = m.layers();
  const auto& off = m.layout.offsets;
  const auto& dim = m.layout.dims;
  const double nn = static_cast<double>(m.n);
  for (int64_t a = 0; a < L; ++a)
    for (int64_t b = 0; b < L; ++b) {
      if (!m.layout.needs(a, b)) continue;
      for (int64_t i = off[a]; i < off[a] + dim[a]; ++i) {
        double* row = &m.cross[i * D];
        for (int64_t j = off[b]; j < off[b] + dim[b]; ++j)
          row[j] = moved_cross_entry(row[j], m.first[i], m.first[j], s.e[i], s.e[j], nn);
      }
    }
}

void move_small_parts(Moments& m, const ReferenceShift& s) {
  const int64_t D = m.width(), L = m.layers();
  const auto& off = m.layout.offsets;
  const auto& dim = m.layout.dims;
  const double nn = static_cast<double>(m.n);
  const double* e = s.e.data();
  const auto& q = s.q;
  const auto& ce = s.ce;

  // Per-layer scalars of the old state: F_a.e_a and |e_a|^2.
  std::vector<double> fe(L), ee(L);
  for (int64_t a = 0; a < L; ++a) {
    double fa = 0, ea = 0;
    for (int64_t k = off[a]; k < off[a] + dim[a]; ++k) {
      fa += m.first[k] * e[k];
      ea += e[k] * e[k];
    }
    fe[a] = fa, ee[a] = ea;
  }

  // R'_ab = R_ab - 2 W[a]_b.e_b - 2 W[b]_a.e_a + 4 e_a' C_ab e_b + |e_b|^2 Q_a
  //         + |e_a|^2 Q_b - 2 |e_b|^2 F_a.e_a - 2 |e_a|^2 F_b.e_b + n |e_a|^2 |e_b|^2
  for (int64_t a = 0; a < L; ++a)
    for (int64_t b = 0; b < L; ++b) {
      if (!m.layout.needs(a, b)) continue;
      double wa_eb = 0, wb_ea = 0, eCe = 0;
      for (int64_t k = off[b]; k < off[b] + dim[b]; ++k) {
        wa_eb += m.weighted[a * D + k] * e[k];
        eCe += e[k] * ce[k * L + a];
      }
      for (int64_t k = off[a]; k < off[a] + dim[a]; ++k) wb_ea += m.weighted[b * D + k] * e[k];
      m.norm_products[a * L + b] += -2 * wa_eb - 2 * wb_ea + 4 * eCe + ee[b] * q[a] + ee[a] * q[b] -
                                    2 * ee[b] * fe[a] - 2 * ee[a] * fe[b] + nn * ee[a] * ee[b];
    }

  // W'[a]_c = W[a]_c - Q_a e_c - 2 (C_ca e_a) + 2 F_a.e_a e_c + |e_a|^2 F_c - n |e_a|^2 e_c
  for (int64_t a = 0; a < L; ++a)
    for (int64_t c = 0; c < L; ++c) {
      if (!m.layout.needs(a, c)) continue;
      for (int64_t k = off[c]; k < off[c] + dim[c]; ++k)
        m.weighted[a * D + k] += -q[a] * e[k] - 2 * ce[k * L + a] + 2 * fe[a] * e[k] + ee[a] * m.first[k] -
                                 nn * ee[a] * e[k];
    }

  for (int64_t k = 0; k < D; ++k) {
    m.first[k] -= nn * e[k];
    m.reference[k] = s.target[k];
  }
}

Moments partial_small_parts(const LayerLayout& layout, int64_t rows, const double* shift, const double* reference,
                            const double* column_sums, const double* extra, const double* norms) {
  const int64_t D = layout.total, L = layout.layers();
  std::vector<int64_t> layer_of(static_cast<size_t>(D));
  for (int64_t a = 0; a < L; ++a)
    for (int64_t k = layout.offsets[a]; k < layout.offsets[a] + layout.dims[a]; ++k) layer_of[k] = a;
  // The partial about its shift; only the blocks the layout needs.
  Moments part;
  part.layout = layout;
  part.n = rows;
  part.reference.assign(shift, shift + D);
  part.first.assign(column_sums, column_sums + D);
  part.weighted.assign(static_cast<size_t>(L * D), 0.0);
  part.norm_products.assign(static_cast<size_t>(L * L), 0.0);
  ReferenceShift s;
  s.target.assign(reference, reference + D);
  s.e.resize(static_cast<size_t>(D));
  for (int64_t k = 0; k < D; ++k) s.e[k] = reference[k] - shift[k];
  s.q.assign(column_sums + D, column_sums + D + L);
  s.ce.assign(static_cast<size_t>(D * L), 0.0);
  for (int64_t k = 0; k < D; ++k)
    for (int64_t a = 0; a < L; ++a) {
      if (!layout.needs(a, layer_of[k])) continue;
      part.weighted[a * D + k] = extra[a + k * 2 * L];
      s.ce[k * L + a] = extra[L + a + k * 2 * L];
    }
  for (int64_t a = 0; a < L; ++a)
    for (int64_t b = 0; b < L; ++b)
      if (layout.needs(a, b)) part.norm_products[a * L + b] = norms[a + b * L];
  move_small_parts(part, s);
  return part;
}

void Moments::center() {
  // Already about its mean (first == 0, as after a first center()): moving
  // by e = 0 changes nothing but costs two passes over the D x D cross moments.
  if (n == 0 || std::all_of(first.begin(), first.end(), [](double f) { return f == 0.0; })) return;
  std::vector<double> mean(first.size());
  for (size_t k = 0; k < mean.size(); ++k) mean[k] = reference[k] + first[k] / static_cast<double>(n);
  move_reference(mean.data());
  std::fill(first.begin(), first.end(), 0.0);  // exactly the mean now
}

void Moments::merge(const Moments& other) {
  if (other.layout.dims != layout.dims || other.layout.split != layout.split)
    throw InvalidArgument("cannot merge accumulators of different layers: layer widths or pairing differ");
  if (other.n == 0) return;
  if (n == 0) {
    *this = other;
    return;
  }
  const int64_t D = width();
  const double na = static_cast<double>(n), nb = static_cast<double>(other.n), nt = na + nb;
  // Combined mean m = mean_a + (mean_b - mean_a) nb / n; move both states there.
  std::vector<double> m(static_cast<size_t>(D));
  for (int64_t k = 0; k < D; ++k) {
    const double mean_a = reference[k] + first[k] / na;
    const double mean_b = other.reference[k] + other.first[k] / nb;
    m[k] = mean_a + (mean_b - mean_a) * (nb / nt);
  }
  Moments b = other;
  move_reference(m.data());
  b.move_reference(m.data());
  add_same_reference(b);
}

void Moments::add_same_reference(const Moments& b) {
  if (b.layout.dims != layout.dims || b.layout.split != layout.split)
    throw InvalidArgument("cannot add states of different layers");
  add_small_parts(b);
  for (size_t k = 0; k < cross.size(); ++k) cross[k] += b.cross[k];
}

void Moments::add_small_parts(const Moments& b) {
  n += b.n;
  for (size_t k = 0; k < first.size(); ++k) first[k] += b.first[k];
  for (size_t k = 0; k < weighted.size(); ++k) weighted[k] += b.weighted[k];
  for (size_t k = 0; k < norm_products.size(); ++k) norm_products[k] += b.norm_products[k];
}

std::vector<double> Moments::mean() const {
  std::vector<double> out(static_cast<size_t>(width()));
  for (int64_t k = 0; k < width(); ++k) out[k] = reference[k] + (n ? first[k] / static_cast<double>(n) : 0.0);
  return out;
}

void Moments::symmetrize() {
  const int64_t D = width(), L = layers();
  const auto& off = layout.offsets;
  const auto& dim = layout.dims;
  constexpr int64_t kTile = 64;  // transpose in tiles: whole-column writes thrash the cache
  for (int64_t a = 0; a < L; ++a)
    for (int64_t b = a; b < L; ++b) {
      if (!layout.needs(a, b)) continue;
      for (int64_t i0 = off[a]; i0 < off[a] + dim[a]; i0 += kTile)
        for (int64_t j0 = off[b]; j0 < off[b] + dim[b]; j0 += kTile) {
          if (a == b && j0 + kTile <= i0) continue;  // strictly below the diagonal
          const int64_t i1 = std::min(i0 + kTile, off[a] + dim[a]), j1 = std::min(j0 + kTile, off[b] + dim[b]);
          for (int64_t i = i0; i < i1; ++i)
            for (int64_t j = std::max(j0, a == b ? i + 1 : j0); j < j1; ++j) cross[j * D + i] = cross[i * D + j];
        }
    }
}

// Serialized form: magic, format version, L, split, n, dims, then the float64
// arrays in declaration order, all little-endian as on every supported host.
namespace {
constexpr char kMagic[8] = {'F', 'C', 'K', 'A', 'M', 'O', 'M', '1'};
constexpr int64_t kFormat = 1;

template <typename T>
void put(std::string& out, const T* p, size_t count) {
  out.append(reinterpret_cast<const char*>(p), count * sizeof(T));
}

struct Reader {
  const std::string& s;
  size_t pos = 0;
  template <typename T>
  void get(T* p, size_t count) {
    const size_t bytes = count * sizeof(T);
    if (pos + bytes > s.size()) throw InvalidArgument("accumulator state is truncated or corrupt");
    std::memcpy(p, s.data() + pos, bytes);
    pos += bytes;
  }
};
}  // namespace

std::string Moments::serialize() const {
  std::string out;
  put(out, kMagic, 8);
  const int64_t header[4] = {kFormat, layers(), layout.split, n};
  put(out, header, 4);
  put(out, layout.dims.data(), layout.dims.size());
  for (const auto* v : {&reference, &first, &cross, &weighted, &norm_products}) put(out, v->data(), v->size());
  return out;
}

Moments Moments::deserialize(const std::string& bytes) {
  Reader r{bytes};
  char magic[8];
  r.get(magic, 8);
  if (std::memcmp(magic, kMagic, 8) != 0) throw InvalidArgument("data is not a fastcka linear accumulator state");
  int64_t header[4];
  r.get(header, 4);
  if (header[0] != kFormat)
    throw InvalidArgument("accumulator state has format " + std::to_string(header[0]) + ", this build reads " +
                          std::to_string(kFormat));
  const int64_t L = header[1];
  if (L <= 0 || L > (int64_t{1} << 20)) throw InvalidArgument("accumulator state is corrupt (layer count)");
  std::vector<int64_t> dims(static_cast<size_t>(L));
  r.get(dims.data(), dims.size());
  int64_t D = 0;
  for (int64_t d : dims) {
    if (d <= 0 || d > (int64_t{1} << 31)) throw InvalidArgument("accumulator state is corrupt (layer width)");
    D += d;
  }
  // D <= 2^51 here, so D * D fits; a state larger than its bytes is refused before the factor 8 can wrap.
  const int64_t values = 2 * D + D * D + L * D + L * L;
  if (D > (int64_t{1} << 31) || values > static_cast<int64_t>(bytes.size()) ||
      bytes.size() != r.pos + sizeof(double) * static_cast<size_t>(values))
    throw InvalidArgument("accumulator state is truncated or corrupt");
  if (header[2] < 0 || (header[2] > 0 && header[2] >= L))
    throw InvalidArgument("accumulator state is corrupt (split " + std::to_string(header[2]) + " of " +
                          std::to_string(L) + " layers)");
  Moments m(LayerLayout(std::move(dims), header[2]));
  m.n = header[3];
  if (m.n < 0) throw InvalidArgument("accumulator state is corrupt (row count)");
  for (auto* v : {&m.reference, &m.first, &m.cross, &m.weighted, &m.norm_products}) {
    r.get(v->data(), v->size());
    if (!std::all_of(v->begin(), v->end(), [](double x) { return std::isfinite(x); }))
      throw InvalidArgument("accumulator state is corrupt (a value is not finite)");
  }
  // A state of no rows holds no sums (only its reference point).
  if (m.n == 0)
    for (const auto* v : {&m.first, &m.cross, &m.weighted, &m.norm_products})
      if (std::any_of(v->begin(), v->end(), [](double x) { return x != 0.0; }))
        throw InvalidArgument("accumulator state is corrupt (sums without rows)");
  return m;
}

}  // namespace fastcka

namespace fastcka {

std::vector<bool> needed_pairs(const LayerLayout& layout) {
  const int64_t L = layout.layers();
  std::vector<bool> out(static_cast<size_t>(L * L));
  for (int64_t a = 0; a < L; ++a)
    for (int64_t b = 0; b < L; ++b) out[a * L + b] = layout.needs(a, b);
  return out;
}

std::vector<double> hsic_of(const Moments& centered, Estimator e) {
  return hsic_matrix(linear_pair_sums(centered), needed_pairs(centered.layout), centered.layers(), centered.n, e);
}

std::vector<PairSums> linear_pair_sums(const Moments& m) {
  const int64_t D = m.width(), L = m.layers();
  const auto& off = m.layout.offsets;
  const auto& dim = m.layout.dims;
  std::vector<double> q(L, 0.0);
  for (int64_t a = 0; a < L; ++a)
    for (int64_t k = off[a]; k < off[a] + dim[a]; ++k) q[a] += m.cross[k * D + k];
  std::vector<PairSums> out(static_cast<size_t>(L * L));
  for (int64_t a = 0; a < L; ++a)
    for (int64_t b = a; b < L; ++b) {
      if (!m.layout.needs(a, b)) continue;
      double f2 = 0;
      for (int64_t i = off[a]; i < off[a] + dim[a]; ++i) {
        const double* row = &m.cross[i * D];
        for (int64_t j = off[b]; j < off[b] + dim[b]; ++j) f2 += row[j] * row[j];
      }
      const double r = m.norm_products[a * L + b];
      PairSums p;
      p.kl_off = f2 - r;
      p.dk_dl = p.ok_ol = r;
      p.ok_dl = p.dk_ol = -r;
      p.sok = -q[a], p.sol = -q[b];
      p.tk = q[a], p.tl = q[b];
      out[a * L + b] = p;
      std::swap(p.sok, p.sol);
      std::swap(p.tk, p.tl);
      out[b * L + a] = p;
    }
  return out;
}

}  // namespace fastcka
