// Thin device ids: 24-bit numbers the pool's metadata is keyed by.
//
// Ids are handed out in increasing order and never reused after a delete (a
// stale catalog entry can then never name a different, newer volume). The
// allocation high-water mark lives in the pool itself, in the low 24 bits of
// the 64-bit transaction id; the upper 40 bits count changes. Every create
// and delete bumps the transaction id *before* the kernel change, so:
//   - after a restart, even with no catalog at all, the next id is known and
//     collides with nothing this library ever allocated;
//   - a caller that stored the transaction id after its last change knows the
//     pool is exactly as it left it iff the kernel still reports that value,
//     and must resync its view otherwise (a crash between the bump and the
//     change leaves the bump visible, never a silent change).
// Pure functions, unit-tested without a kernel.
#pragma once

#include <cstdint>
#include <optional>
#include <set>

namespace stepsnap::dm {

using ThinId = std::uint32_t;

constexpr ThinId kMaxThinId = (1u << 24) - 1;
// 0 is a valid kernel id but LVM and others start at 1; so do we, which also
// lets a fresh pool (transaction id 0) mean "nothing allocated yet".
constexpr ThinId kFirstThinId = 1;

struct TxnView {
  std::uint64_t generation = 0;  // number of changes made through this scheme
  ThinId next_id = kFirstThinId;
};

std::uint64_t encode_txn(const TxnView& view);
TxnView decode_txn(std::uint64_t txn);

// The transaction id to set before creating `id`, and before a delete.
std::uint64_t txn_for_create(std::uint64_t txn, ThinId id);
std::uint64_t txn_for_delete(std::uint64_t txn);

// How the pool's transaction id (`kernel`) relates to the one a caller
// recorded after its last change.
enum class TxnRelation {
  same,      // nothing changed
  ahead,     // more changes since (a crash between a bump and the caller's
             // record of it, or another user of this scheme): reconcile
  behind,    // fewer changes than recorded: the metadata was replaced or
             // rolled back; ids the caller knows may be missing or reused
  diverged,  // same count, other id: set outside this scheme
};
TxnRelation compare_txn(std::uint64_t recorded, std::uint64_t kernel);

// The first id at or after `next` (wrapping from kMaxThinId to kFirstThinId)
// that is not in `in_use`; nullopt when all 2^24-1 ids are taken.
std::optional<ThinId> next_free_id(ThinId next, const std::set<ThinId>& in_use);

}  // namespace stepsnap::dm
