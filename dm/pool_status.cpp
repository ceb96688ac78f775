#include "dm/pool_status.h"

#include <cerrno>
#include <charconv>
#include <sstream>
#include <vector>

#include "dm/line_words.h"

namespace stepsnap::dm {
namespace {

bool fraction(const std::string& text, std::uint64_t* used, std::uint64_t* total) {
  auto slash = text.find('/');
  return slash != std::string::npos && parse_number(text.substr(0, slash), used) &&
         parse_number(text.substr(slash + 1), total);
}

}  // namespace

std::string to_string(PoolMode mode) {
  switch (mode) {
    case PoolMode::write:
      return "rw";
    case PoolMode::read_only:
      return "ro";
    case PoolMode::out_of_data_space:
      return "out_of_data_space";
    case PoolMode::failed:
      return "Fail";
  }
  return "?";
}

Result<PoolStatus> parse_pool_status(const std::string& line) {
  auto bad = [&](const std::string& why) {
    return fail("parse thin-pool status", "\"" + line + "\"", EINVAL, why);
  };
  auto w = words(line);
  PoolStatus s;
  // "Error" is what the kernel prints when it could not read its own metadata.
  if (!w.empty() && (w[0] == "Fail" || w[0] == "Error")) {
    s.mode = PoolMode::failed;
    return s;
  }
  if (w.size() < 3) return bad("fewer than 3 fields");
  if (!parse_number(w[0], &s.transaction_id)) return bad("transaction id");
  if (!fraction(w[1], &s.used_metadata_blocks, &s.total_metadata_blocks)) return bad("metadata");
  if (!fraction(w[2], &s.used_data_blocks, &s.total_data_blocks)) return bad("data");
  if (w.size() > 3 && w[3] != "-") {
    std::uint64_t root = 0;
    if (!parse_number(w[3], &root)) return bad("held metadata root");
    s.held_metadata_root = root;
  }
  if (w.size() > 4) {
    if (w[4] == "rw")
      s.mode = PoolMode::write;
    else if (w[4] == "ro")
      s.mode = PoolMode::read_only;
    else if (w[4] == "out_of_data_space")
      s.mode = PoolMode::out_of_data_space;
    else
      return bad("mode " + w[4]);
  }
  if (w.size() > 5) s.discard_passdown = w[5] == "discard_passdown";
  if (w.size() > 6) s.error_if_no_space = w[6] == "error_if_no_space";
  if (w.size() > 7) s.needs_check = w[7] == "needs_check";
  if (w.size() > 8 && !parse_number(w[8], &s.metadata_low_watermark))
    return bad("metadata low watermark");
  return s;
}

Result<ThinStatus> parse_thin_status(const std::string& line) {
  auto w = words(line);
  ThinStatus s;
  if (!w.empty() && w[0] == "Fail") {
    s.failed = true;
    return s;
  }
  if (w.size() < 2 || !parse_number(w[0], &s.mapped_sectors)) {
    return fail("parse thin status", "\"" + line + "\"", EINVAL);
  }
  if (w[1] != "-") {
    std::uint64_t highest = 0;
    if (!parse_number(w[1], &highest)) return fail("parse thin status", "\"" + line + "\"", EINVAL);
    s.highest_mapped_sector = highest;
  }
  return s;
}

}  // namespace stepsnap::dm
