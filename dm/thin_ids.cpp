#include "dm/thin_ids.h"

namespace stepsnap::dm {
namespace {
constexpr unsigned kIdBits = 24;
constexpr std::uint64_t kIdMask = (std::uint64_t{1} << kIdBits) - 1;

ThinId wrap(std::uint64_t id) {
  return (id > kMaxThinId || id < kFirstThinId) ? kFirstThinId : static_cast<ThinId>(id);
}
}  // namespace

std::uint64_t encode_txn(const TxnView& view) {
  return (view.generation << kIdBits) | (view.next_id & kIdMask);
}

TxnView decode_txn(std::uint64_t txn) { return TxnView{txn >> kIdBits, wrap(txn & kIdMask)}; }

std::uint64_t txn_for_create(std::uint64_t txn, ThinId id) {
  TxnView v = decode_txn(txn);
  return encode_txn({v.generation + 1, wrap(std::uint64_t{id} + 1)});
}

std::uint64_t txn_for_delete(std::uint64_t txn) {
  TxnView v = decode_txn(txn);
  return encode_txn({v.generation + 1, v.next_id});
}

TxnRelation compare_txn(std::uint64_t recorded, std::uint64_t kernel) {
  if (recorded == kernel) return TxnRelation::same;
  std::uint64_t r = decode_txn(recorded).generation, k = decode_txn(kernel).generation;
  if (k > r) return TxnRelation::ahead;
  if (k < r) return TxnRelation::behind;
  return TxnRelation::diverged;
}

std::optional<ThinId> next_free_id(ThinId next, const std::set<ThinId>& in_use) {
  ThinId id = wrap(next);
  for (std::uint64_t tried = 0; tried < kMaxThinId; ++tried) {
    if (!in_use.contains(id)) return id;
    id = wrap(std::uint64_t{id} + 1);
  }
  return std::nullopt;
}

}  // namespace stepsnap::dm
