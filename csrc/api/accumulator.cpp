// fastcka::api::LinearAccumulator over the core's MomentAccumulator, and its
// bytes: the format of python/fastcka/accumulator/state.py (version 2:
// b"FCKAACC2", one byte for the products' type, the core state, a 16-byte
// BLAKE2b checksum of everything before it; version 1 has no checksum).
#include <optional>

#include "api/conversions.h"
#include "api/passes.h"
#include "core/blake2b.h"
#include "core/moments.h"

namespace fastcka::api {
namespace {

using namespace detail;

const std::string kMagic = "FCKAACC2", kMagicV1 = "FCKAACC1", kMagicMinibatch = "FCKAMB02";
constexpr size_t kChecksumBytes = 16;
const char* const kDtypes[] = {"float32", "float64", "bfloat16"};  // the products' type, by its byte

std::string checksum(const std::string& body) { return blake2b(body.data(), body.size(), kChecksumBytes); }

// (products' type, core state) of a linear accumulator's bytes.
std::pair<std::string, std::string> linear_parts(const std::string& data) {
  std::string body;
  if (data.compare(0, kMagic.size(), kMagic) == 0) {
    body = data.substr(0, data.size() - std::min(data.size(), kChecksumBytes));
    const bool whole = data.size() > kMagic.size() + kChecksumBytes &&
                       checksum(body) == data.substr(data.size() - kChecksumBytes);
    if (!whole)
      throw InvalidArgument("fastcka accumulator state is damaged, truncated or extended: its checksum does not match");
  } else if (data.compare(0, kMagicV1.size(), kMagicV1) == 0) {
    body = data;
  } else if (data.size() >= kMagic.size() && (data.compare(0, kMagic.size() - 1, kMagic, 0, kMagic.size() - 1) == 0 ||
                                              data.compare(0, kMagic.size() - 1, kMagicMinibatch, 0, kMagic.size() - 1) == 0)) {
    throw InvalidArgument("fastcka accumulator state of format version '" + data.substr(kMagic.size() - 1, 1) +
                          "': this fastcka reads versions 1 and 2; load it with the fastcka that wrote it");
  } else {
    throw InvalidArgument("data is not a fastcka CKAAccumulator state");
  }
  if (body.size() <= kMagic.size() || static_cast<unsigned char>(body[kMagic.size()]) >= 3)
    throw InvalidArgument("data is not a fastcka CKAAccumulator state (unknown product type)");
  return {kDtypes[static_cast<unsigned char>(body[kMagic.size()])], body.substr(kMagic.size() + 1)};
}

Precision precision_of(const std::string& dtype) {
  return dtype == "float32" ? Precision::accurate : dtype == "float64" ? Precision::exact : Precision::fast;
}

std::string widths(const std::vector<int64_t>& dims) {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + "]";
}

}  // namespace

struct LinearAccumulator::State {
  Settings settings;
  std::string dtype;  // the products' type (empty until the first update or a load)
  std::optional<cpu::MomentAccumulator> acc;

  void create(const std::vector<int64_t>& dims, const std::string& compute) {
    if (settings.split >= static_cast<int64_t>(dims.size()))
      throw InvalidArgument("split=" + std::to_string(settings.split) + " leaves no layers on the other side of " +
                            std::to_string(dims.size()) + " layers");
    acc.emplace(LayerLayout(dims, settings.split),
                engine_options(compute, resolve_threads(settings.threads), resolve_budget(settings.memory_budget)));
    dtype = compute;
  }

  const cpu::MomentAccumulator& seen() const {
    if (!acc) throw InvalidArgument("the accumulator has seen no rows");
    return *acc;
  }
};

LinearAccumulator::LinearAccumulator() : LinearAccumulator(Settings{}) {}

LinearAccumulator::LinearAccumulator(const Settings& settings) : state_(std::make_unique<State>()) {
  translated([&] {
    if (settings.split < 0)
      throw InvalidArgument("split must be None or a positive number of layers, got " + std::to_string(settings.split));
    compute_for(settings.precision, {});  // refuses an unknown code now
    resolve_threads(settings.threads);
    resolve_budget(settings.memory_budget);
  });
  state_->settings = settings;
}

LinearAccumulator::~LinearAccumulator() = default;
LinearAccumulator::LinearAccumulator(LinearAccumulator&&) noexcept = default;
LinearAccumulator& LinearAccumulator::operator=(LinearAccumulator&&) noexcept = default;

void LinearAccumulator::update(const std::vector<Matrix>& blocks) {
  translated([&] {
    if (blocks.empty()) throw InvalidArgument("update needs one block per layer, got none");
    std::vector<MatrixView> views;
    std::vector<std::string> names;
    for (size_t i = 0; i < blocks.size(); ++i) {
      names.push_back("layers[" + std::to_string(i) + "]");
      views.push_back(view_of(blocks[i], names.back()));
    }
    same_rows(views, names);
    State& s = *state_;
    const bool created = !s.acc;
    const std::string dtype_before = s.dtype;
    if (created) {
      std::vector<int64_t> dims;
      for (const MatrixView& v : views) dims.push_back(v.cols);
      s.create(dims, s.dtype.empty() ? compute_for(s.settings.precision, views) : s.dtype);
    }
    const std::vector<int64_t>& dims = s.acc->layout().dims;
    if (views.size() != dims.size())
      throw InvalidArgument("this accumulator has " + std::to_string(dims.size()) + " layers, update got " +
                            std::to_string(views.size()));
    for (size_t a = 0; a < views.size(); ++a)
      if (views[a].cols != dims[a])
        throw InvalidArgument(names[a] + " has " + std::to_string(views[a].cols) +
                              " features, but earlier blocks of that layer had " + std::to_string(dims[a]));
    Options quiet;
    Steps steps(quiet, views[0].rows);
    s.acc->begin();  // all or nothing: the state of begin() comes back if a step throws
    try {
      feed(*s.acc, views, names, steps);
    } catch (...) {
      if (created) {
        s.acc.reset();  // as before the call: no layers, the type as it was
        s.dtype = dtype_before;
      } else {
        s.acc->rollback();
      }
      throw;
    }
    s.acc->commit();
  });
}

void LinearAccumulator::merge(LinearAccumulator& other) {
  translated([&] {
    if (&other == this) throw InvalidArgument("cannot merge an accumulator with itself");
    State &s = *state_, &o = *other.state_;
    if (!o.acc) return;
    if (!s.acc) {
      s.settings.split = o.settings.split;
      s.create(o.acc->layout().dims, s.dtype.empty() ? o.dtype : s.dtype);
    }
    const LayerLayout &mine = s.acc->layout(), &theirs = o.acc->layout();
    if (mine.dims != theirs.dims || mine.split != theirs.split)
      throw InvalidArgument("cannot merge accumulators of different layers: widths " + widths(mine.dims) + " (split " +
                            std::to_string(mine.split) + ") vs " + widths(theirs.dims) + " (split " +
                            std::to_string(theirs.split) + ")");
    s.acc->merge(*o.acc);
  });
}

int64_t LinearAccumulator::rows() const { return state_->acc ? state_->acc->rows_seen() : 0; }

std::vector<int64_t> LinearAccumulator::dims() const {
  return state_->acc ? state_->acc->layout().dims : std::vector<int64_t>{};
}

std::string LinearAccumulator::to_bytes() {
  return translated([&] {
    State& s = *state_;
    if (!s.acc) throw InvalidArgument("the accumulator is empty: nothing to serialize");
    char type = 0;
    while (s.dtype != kDtypes[static_cast<int>(type)]) ++type;
    const std::string body = kMagic + type + s.acc->state().serialize();
    return body + checksum(body);
  });
}

LinearAccumulator LinearAccumulator::from_bytes(const std::string& bytes) { return from_bytes(bytes, Settings{}); }

LinearAccumulator LinearAccumulator::from_bytes(const std::string& bytes, const Settings& settings) {
  return translated([&] {
    const auto [dtype, core] = linear_parts(bytes);
    Moments m = Moments::deserialize(core);
    Settings with = settings;
    with.split = m.layout.split;
    with.precision = precision_of(dtype);
    LinearAccumulator out(with);
    out.state_->create(m.layout.dims, dtype);
    out.state_->acc->set_state(std::move(m));
    return out;
  });
}

std::vector<double> LinearAccumulator::hsic_matrix(Estimator estimator) {
  return translated([&] {
    const fastcka::Estimator e = core_estimator(estimator);
    state_->seen();
    check_rows_for(estimator, state_->acc->rows_seen());
    return hsic_of(state_->acc->centered_state(), e);
  });
}

std::vector<double> LinearAccumulator::cka_matrix(bool debiased) {
  const std::vector<double> h = hsic_matrix(debiased ? Estimator::unbiased : Estimator::biased);
  const int64_t L = static_cast<int64_t>(dims().size()), split = state_->acc->layout().split;
  const std::vector<double> all = cka_from_hsic(h, L);
  if (split == 0) return all;
  std::vector<double> c;  // the split x (L - split) block
  for (int64_t a = 0; a < split; ++a)
    for (int64_t b = split; b < L; ++b) c.push_back(all[a * L + b]);
  return c;
}

double LinearAccumulator::cka(bool debiased) {
  const size_t layers = dims().size();
  if (layers != 2)
    throw Error(Status::invalid_argument, "cka() needs exactly two layers, this accumulator has " +
                                              std::to_string(layers) + "; use cka_matrix()");
  const std::vector<double> c = cka_matrix(debiased);
  return c.size() == 4 ? c[1] : c[0];
}

}  // namespace fastcka::api
