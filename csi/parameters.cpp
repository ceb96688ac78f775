#include "csi/parameters.h"

#include <sys/mount.h>

#include <cstdio>

#include "common/names.h"

namespace stepsnap::csi {

using ::csi::v1::VolumeCapability;
using grpc::StatusCode;
using Mode = VolumeCapability::AccessMode::Mode;

std::string device_name_for(std::string_view csi_name) {
  if (csi_name.size() <= kMaxIdLength && is_valid_name(csi_name)) return std::string(csi_name);
  std::uint64_t h = 1469598103934665603ull;  // FNV-1a 64
  for (unsigned char c : csi_name) {
    h ^= c;
    h *= 1099511628211ull;
  }
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h));
  return std::string("csi-") + hex;
}

namespace {

bool known_fs(const std::string& fs) { return fs == "ext4" || fs == "xfs"; }

}  // namespace

CsiResult<std::string> filesystem_for(const Parameters& parameters, const Capabilities& caps) {
  std::string from_param;
  for (const auto& [key, value] : parameters) {
    if (key.rfind("csi.storage.k8s.io/", 0) == 0) continue;
    if (key != "fsType") {
      return csi_fail(StatusCode::INVALID_ARGUMENT,
                      "unknown parameter \"" + key +
                          "\"; stepsnap-csi's StorageClass takes fsType (ext4, xfs or none)");
    }
    if (!known_fs(value) && value != "none") {
      return csi_fail(StatusCode::INVALID_ARGUMENT,
                      "parameter fsType \"" + value + "\" is not ext4, xfs or none");
    }
    from_param = value;
  }
  std::string from_caps;
  bool any_mount = false;
  for (const auto& cap : caps) {
    if (!cap.has_mount()) continue;
    any_mount = true;
    const std::string& fs = cap.mount().fs_type();
    if (fs.empty()) continue;
    if (!known_fs(fs)) {
      return csi_fail(StatusCode::INVALID_ARGUMENT,
                      "volume capability fs_type \"" + fs + "\" is not ext4 or xfs");
    }
    if (!from_caps.empty() && from_caps != fs) {
      return csi_fail(StatusCode::INVALID_ARGUMENT, "volume capabilities ask for both " +
                                                        from_caps + " and " + fs +
                                                        "; a volume has one filesystem");
    }
    from_caps = fs;
  }
  if (!from_param.empty()) {
    if (!from_caps.empty() && from_caps != from_param) {
      return csi_fail(StatusCode::INVALID_ARGUMENT, "parameter fsType " + from_param +
                                                        " and volume capability fs_type " +
                                                        from_caps + " differ; give one");
    }
    if (from_param == "none" && any_mount) {
      return csi_fail(StatusCode::INVALID_ARGUMENT,
                      "parameter fsType none (a raw device) cannot serve a mount capability");
    }
    return from_param;
  }
  if (!from_caps.empty()) return from_caps;
  return any_mount || caps.empty() ? std::string("ext4") : std::string("none");
}

CsiResult<void> check_capability(const VolumeCapability& cap) {
  if (!cap.has_mount() && !cap.has_block()) {
    return csi_fail(StatusCode::INVALID_ARGUMENT,
                    "volume capability has no access type; give mount or block");
  }
  if (!cap.has_access_mode()) {
    return csi_fail(StatusCode::INVALID_ARGUMENT, "volume capability has no access mode");
  }
  switch (cap.access_mode().mode()) {
    case VolumeCapability::AccessMode::SINGLE_NODE_WRITER:
    case VolumeCapability::AccessMode::SINGLE_NODE_READER_ONLY:
    case VolumeCapability::AccessMode::SINGLE_NODE_SINGLE_WRITER:
    case VolumeCapability::AccessMode::SINGLE_NODE_MULTI_WRITER:
      return {};
    default:
      return csi_fail(StatusCode::INVALID_ARGUMENT,
                      "access mode " +
                          VolumeCapability::AccessMode::Mode_Name(cap.access_mode().mode()) +
                          " is not supported: a stepsnap volume lives in one node's pool; use "
                          "SINGLE_NODE_WRITER or SINGLE_NODE_READER_ONLY");
  }
}

CsiResult<void> check_capabilities(const Capabilities& caps) {
  if (caps.empty()) {
    return csi_fail(StatusCode::INVALID_ARGUMENT,
                    "volume_capabilities is empty; give at least one");
  }
  for (const auto& cap : caps) {
    if (auto r = check_capability(cap); !r) return r;
  }
  return {};
}

CsiResult<void> check_capability_fits(const VolumeCapability& cap, const std::string& fs) {
  if (!cap.has_mount()) return {};
  if (fs == "none") {
    return csi_fail(StatusCode::INVALID_ARGUMENT,
                    "the volume is a raw device (fsType none) and cannot be mounted; use block "
                    "access");
  }
  if (!cap.mount().fs_type().empty() && cap.mount().fs_type() != fs) {
    return csi_fail(StatusCode::INVALID_ARGUMENT,
                    "the volume holds " + fs + ", not " + cap.mount().fs_type());
  }
  return {};
}

CsiResult<std::uint64_t> size_for(const ::csi::v1::CapacityRange* range) {
  std::int64_t required = range ? range->required_bytes() : 0;
  std::int64_t limit = range ? range->limit_bytes() : 0;
  if (required < 0 || limit < 0) {
    return csi_fail(StatusCode::INVALID_ARGUMENT, "capacity_range has a negative number");
  }
  if (limit > 0 && required > limit) {
    return csi_fail(StatusCode::OUT_OF_RANGE, "capacity_range asks for at least " +
                                                  std::to_string(required) + " bytes but at most " +
                                                  std::to_string(limit));
  }
  constexpr std::uint64_t kMax = 1ull << 50;  // protocol/'s kMaxVolumeBytes
  auto round_up = [](std::uint64_t n) {
    return (n + kSizeGranularity - 1) / kSizeGranularity * kSizeGranularity;
  };
  std::uint64_t size =
      required > 0 ? round_up(static_cast<std::uint64_t>(required)) : kDefaultVolumeBytes;
  if (limit > 0 && size > static_cast<std::uint64_t>(limit)) {
    // Whole sectors up to the limit still hold the required bytes.
    size = static_cast<std::uint64_t>(limit) / 512 * 512;
    if (size == 0 || size < static_cast<std::uint64_t>(required)) {
      return csi_fail(StatusCode::OUT_OF_RANGE,
                      "capacity_range limit " + std::to_string(limit) +
                          " bytes holds no whole 512-byte sector above the required size");
    }
  }
  if (size > kMax) {
    return csi_fail(StatusCode::OUT_OF_RANGE,
                    "capacity_range asks for more than 1 PiB, the most stepsnap makes");
  }
  return size;
}

bool size_fits(std::uint64_t size, const ::csi::v1::CapacityRange* range) {
  if (!range) return true;
  if (range->required_bytes() > 0 && size < static_cast<std::uint64_t>(range->required_bytes()))
    return false;
  if (range->limit_bytes() > 0 && size > static_cast<std::uint64_t>(range->limit_bytes()))
    return false;
  return true;
}

std::string source_label(const ::csi::v1::VolumeContentSource* source) {
  if (!source) return "none";
  if (source->has_snapshot()) return "snapshot:" + source->snapshot().snapshot_id();
  if (source->has_volume()) return "volume:" + source->volume().volume_id();
  return "none";
}

MountOptions mount_options(const google::protobuf::RepeatedPtrField<std::string>& mount_flags,
                           const std::string& fs, bool read_only) {
  struct Bit {
    const char* name;
    unsigned long set;
    unsigned long clear;
  };
  static constexpr Bit kBits[] = {
      {"ro", MS_RDONLY, 0},
      {"rw", 0, MS_RDONLY},
      {"nosuid", MS_NOSUID, 0},
      {"suid", 0, MS_NOSUID},
      {"nodev", MS_NODEV, 0},
      {"dev", 0, MS_NODEV},
      {"noexec", MS_NOEXEC, 0},
      {"exec", 0, MS_NOEXEC},
      {"sync", MS_SYNCHRONOUS, 0},
      {"async", 0, MS_SYNCHRONOUS},
      {"noatime", MS_NOATIME, 0},
      {"atime", 0, MS_NOATIME},
      {"nodiratime", MS_NODIRATIME, 0},
      {"relatime", MS_RELATIME, 0},
      {"strictatime", MS_STRICTATIME, 0},
      {"dirsync", MS_DIRSYNC, 0},
      {"defaults", 0, 0},
  };
  MountOptions out;
  auto add_data = [&](const std::string& option) {
    if (!out.data.empty()) out.data += ",";
    out.data += option;
  };
  for (const auto& flag : mount_flags) {
    bool bit = false;
    for (const auto& b : kBits) {
      if (flag == b.name) {
        out.flags = (out.flags | b.set) & ~b.clear;
        bit = true;
      }
    }
    if (!bit && !flag.empty()) add_data(flag);
  }
  if (fs == "xfs" && out.data.find("nouuid") == std::string::npos) add_data("nouuid");
  if (read_only) out.flags |= MS_RDONLY;
  return out;
}

bool is_read_only_mode(Mode mode) {
  return mode == VolumeCapability::AccessMode::SINGLE_NODE_READER_ONLY ||
         mode == VolumeCapability::AccessMode::MULTI_NODE_READER_ONLY;
}

}  // namespace stepsnap::csi
