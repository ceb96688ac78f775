// What a CSI request asks for, in stepsnapd's terms: device names for CSI
// names, the filesystem from the StorageClass parameters and the volume
// capabilities, a size from a capacity range, mount flags. Pure: unit-tested
// without a kernel (tests/csi/parameters_test.cpp).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "csi/csi.pb.h"
#include "csi/status_map.h"

namespace stepsnap::csi {

using Parameters = google::protobuf::Map<std::string, std::string>;
using Capabilities = google::protobuf::RepeatedPtrField<::csi::v1::VolumeCapability>;

// Longest device name we hand out as a CSI id, leaving room for the
// ".clonesrc" suffix of a CLONE_VOLUME's passing snapshot within stepsnap's
// 63-character name rule.
inline constexpr std::size_t kMaxIdLength = 48;
inline constexpr std::string_view kCloneSourceSuffix = ".clonesrc";
// Without a capacity range: 1 GiB (thin: only written blocks take space).
inline constexpr std::uint64_t kDefaultVolumeBytes = 1ull << 30;
// Sizes are rounded up to whole MiB: a sector multiple as dm-thin needs, and
// what a filesystem is made of anyway.
inline constexpr std::uint64_t kSizeGranularity = 1ull << 20;

// Labels stepsnap-csi keeps on the devices it makes, so that a repeated
// CreateVolume or CreateSnapshot can tell "the same request again" from
// "another request with the same name".
namespace label {
inline constexpr const char* name = "csi.name";                    // the CO's name, as given
inline constexpr const char* fs = "csi.fs";                        // ext4, xfs or none
inline constexpr const char* source = "csi.source";                // snapshot:ID, volume:ID or none
inline constexpr const char* source_volume = "csi.source-volume";  // a snapshot's volume
}  // namespace label

// The device name for a CSI name: the name itself when it is a valid
// stepsnap name of at most kMaxIdLength characters (external-provisioner's
// "pvc-<uid>" and external-snapshotter's "snapshot-<uid>" are), else "csi-"
// and 16 hex digits of its FNV-1a hash (the label csi.name tells a
// collision apart).
std::string device_name_for(std::string_view csi_name);

// The filesystem to make: "ext4", "xfs" or "none" (a raw device). From the
// StorageClass parameter fsType if given, else from a mount capability's
// fs_type, else ext4; a block-only request without fsType gets none.
// INVALID_ARGUMENT for an unknown parameter, an unknown filesystem or
// capabilities asking for two different ones. Keys starting with
// "csi.storage.k8s.io/" belong to the sidecars and are ignored.
CsiResult<std::string> filesystem_for(const Parameters& parameters, const Capabilities& caps);

// INVALID_ARGUMENT unless the capability has an access type (mount or
// block) and a single-node access mode: a volume lives in one node's pool.
CsiResult<void> check_capability(const ::csi::v1::VolumeCapability& cap);
// Every one of them, and at least one.
CsiResult<void> check_capabilities(const Capabilities& caps);

// Whether a volume of `fs` serves `cap`: a mount needs a filesystem, and a
// given fs_type must be the volume's.
CsiResult<void> check_capability_fits(const ::csi::v1::VolumeCapability& cap,
                                      const std::string& fs);

// The size of a new volume for a capacity range (null: none given):
// required_bytes rounded up to a MiB, capped at limit_bytes; without
// required_bytes kDefaultVolumeBytes capped at limit_bytes. OUT_OF_RANGE
// when nothing fits, INVALID_ARGUMENT for negative numbers.
CsiResult<std::uint64_t> size_for(const ::csi::v1::CapacityRange* range);
// Whether an existing volume's size satisfies the range.
bool size_fits(std::uint64_t size, const ::csi::v1::CapacityRange* range);

// The csi.source label of a request: "none", "snapshot:<id>" or "volume:<id>".
std::string source_label(const ::csi::v1::VolumeContentSource* source);

// mount(2)'s flags and data for a mount capability's mount_flags: the
// flags the kernel takes as bits (ro, noatime, nosuid, ...) become bits,
// everything else (e.g. "discard", "data=ordered") goes into the data
// string, in order. xfs gets "nouuid": a clone of an xfs volume carries its
// origin's UUID and would otherwise not mount beside it.
struct MountOptions {
  unsigned long flags = 0;
  std::string data;
};
MountOptions mount_options(const google::protobuf::RepeatedPtrField<std::string>& mount_flags,
                           const std::string& fs, bool read_only);

// Whether an access mode means read-only.
bool is_read_only_mode(::csi::v1::VolumeCapability::AccessMode::Mode mode);

}  // namespace stepsnap::csi
