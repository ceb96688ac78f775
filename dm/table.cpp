#include "dm/table.h"

#include <cerrno>
#include <vector>

#include "dm/line_words.h"

namespace stepsnap::dm {

Target pool_target(const PoolTable& t) {
  std::vector<std::string> features;
  if (!t.zero_new_blocks) features.push_back("skip_block_zeroing");
  if (!t.discard_passdown) features.push_back("no_discard_passdown");
  if (t.error_if_no_space) features.push_back("error_if_no_space");
  if (t.read_only) features.push_back("read_only");
  std::string params = t.metadata_dev + " " + t.data_dev + " " + std::to_string(t.block_sectors) +
                       " " + std::to_string(t.low_water_blocks) + " " +
                       std::to_string(features.size());
  for (const auto& f : features) params += " " + f;
  return Target{0, t.data_sectors, "thin-pool", params};
}

Result<PoolTable> parse_pool_target(const Target& target) {
  auto bad = [&](const std::string& why) {
    return fail("parse thin-pool table", target.params, EINVAL, why);
  };
  if (target.type != "thin-pool") return bad("target type is " + target.type);
  auto w = words(target.params);
  if (w.size() < 4) return bad("fewer than 4 arguments");
  PoolTable t;
  t.metadata_dev = w[0];
  t.data_dev = w[1];
  t.data_sectors = target.length;
  if (!parse_number(w[2], &t.block_sectors)) return bad("block size");
  if (!parse_number(w[3], &t.low_water_blocks)) return bad("low water mark");
  std::size_t n = 0;
  if (w.size() > 4 && !parse_number(w[4], &n)) return bad("feature count");
  if (w.size() < 5 + n) return bad("fewer features than counted");
  // The kernel's defaults when a feature is absent.
  t.zero_new_blocks = true;
  t.discard_passdown = true;
  t.error_if_no_space = false;
  for (std::size_t i = 5; i < 5 + n; ++i) {
    if (w[i] == "skip_block_zeroing")
      t.zero_new_blocks = false;
    else if (w[i] == "no_discard_passdown")
      t.discard_passdown = false;
    else if (w[i] == "error_if_no_space")
      t.error_if_no_space = true;
    else if (w[i] == "read_only")
      t.read_only = true;
    // ignore_discard and future features: kept out of our model.
  }
  return t;
}

Target thin_target(const std::string& pool_dev, ThinId id, std::uint64_t sectors) {
  return Target{0, sectors, "thin", pool_dev + " " + std::to_string(id)};
}

Result<ThinTable> parse_thin_target(const Target& target) {
  auto w = words(target.params);
  ThinTable t;
  if (target.type != "thin" || w.size() < 2 || !parse_number(w[1], &t.id)) {
    return fail("parse thin table", target.type + " " + target.params, EINVAL);
  }
  t.pool_dev = w[0];
  return t;
}

}  // namespace stepsnap::dm
