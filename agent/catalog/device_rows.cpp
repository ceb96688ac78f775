// Catalog: the lean read of every device row that start-up recovery plans
// from (catalog.h, DeviceRow).
#include "agent/catalog/catalog.h"

namespace stepsnap::agent {

Result<std::vector<DeviceRow>> Catalog::device_rows(std::int64_t pool_id) {
  std::lock_guard lock(db_->mutex());
  auto st = db_->prepare(
      "SELECT id, thin_id, kind, state, name, dm_name FROM devices WHERE pool_id = ? "
      "ORDER BY id");
  if (!st) return tl::unexpected(st.error());
  st->bind(1, pool_id);
  std::vector<DeviceRow> rows;
  for (;;) {
    auto row = st->step();
    if (!row) return tl::unexpected(row.error());
    if (!*row) return rows;
    DeviceRow d;
    d.id = st->int64(0);
    d.thin_id = static_cast<std::uint32_t>(st->int64(1));
    d.kind = parse_device_kind(st->text(2)).value_or(DeviceKind::volume);
    // The schema's CHECK allows only the four states; anything else would
    // be a bug, and faulty is the state recovery leaves alone.
    d.state = parse_device_state(st->text(3)).value_or(DeviceState::faulty);
    d.name = st->text(4);
    d.dm_name = st->text(5);
    rows.push_back(std::move(d));
  }
}

}  // namespace stepsnap::agent
