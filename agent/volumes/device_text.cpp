#include "agent/volumes/device_text.h"

#include <algorithm>
#include <utility>

#include "agent/volumes/volumes.h"
#include "common/time.h"

namespace stepsnap::agent {

namespace {

using json = nlohmann::json;

// Length of the UTF-8 sequence starting at s[i] (RFC 3629: no overlongs,
// no surrogates, nothing above U+10FFFF: what nlohmann's dump accepts), or 0.
std::size_t utf8_length(std::string_view s, std::size_t i) {
  auto at = [&](std::size_t k) -> unsigned {
    return i + k < s.size() ? static_cast<unsigned char>(s[i + k]) : 0x100;
  };
  auto cont = [&](std::size_t k, unsigned lo = 0x80, unsigned hi = 0xBF) {
    unsigned c = at(k);
    return c >= lo && c <= hi;
  };
  unsigned c = at(0);
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) return cont(1) ? 2 : 0;
  if (c == 0xE0) return cont(1, 0xA0) && cont(2) ? 3 : 0;
  if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) return cont(1) && cont(2) ? 3 : 0;
  if (c == 0xED) return cont(1, 0x80, 0x9F) && cont(2) ? 3 : 0;
  if (c == 0xF0) return cont(1, 0x90) && cont(2) && cont(3) ? 4 : 0;
  if (c >= 0xF1 && c <= 0xF3) return cont(1) && cont(2) && cont(3) ? 4 : 0;
  if (c == 0xF4) return cont(1, 0x80, 0x8F) && cont(2) && cont(3) ? 4 : 0;
  return 0;
}

void key(std::string& out, std::string_view name) {
  out += '"';
  out += name;
  out += "\":";
}

template <typename N>
void number(std::string& out, std::string_view name, N value) {
  out += ',';
  key(out, name);
  out += std::to_string(value);
}

// ,"name":"value" (or only "name":"value" for the first member).
bool text(std::string& out, std::string_view name, std::string_view value, bool first = false) {
  if (!first) out += ',';
  key(out, name);
  return append_json_string(out, value);
}

bool labels(std::string& out, const Labels& labels) {
  out += ",\"labels\":{";
  bool first = true;
  for (const auto& [k, v] : labels) {
    if (!first) out += ',';
    first = false;
    if (!append_json_string(out, k)) return false;
    out += ':';
    if (!append_json_string(out, v)) return false;
  }
  out += '}';
  return true;
}

// The members of device_json in its key order (std::map's, as dump writes
// them): created, dm_name, fault, id, kind, labels, mapped_bytes, name,
// origin, origin_id, owner_uid, parent_id, path, received_from, run_clone,
// size_bytes, state, step, thin_id, uuid. false at a string that is not
// valid UTF-8.
bool write_device(std::string& out, const DeviceRecord& d, const std::string& origin_name) {
  out += '{';
  if (!text(out, "created", format_rfc3339_ns(d.created_ns), true)) return false;
  if (!d.dm_name.empty() && !text(out, "dm_name", d.dm_name)) return false;
  if (!d.fault.empty() && !text(out, "fault", d.fault)) return false;
  number(out, "id", d.id);
  if (!text(out, "kind", to_string(d.kind))) return false;
  if (!labels(out, d.labels)) return false;
  if (d.mapped_bytes) number(out, "mapped_bytes", d.mapped_bytes);
  if (!text(out, "name", d.name)) return false;
  if (!origin_name.empty() && !text(out, "origin", origin_name)) return false;
  if (d.origin_id) number(out, "origin_id", *d.origin_id);
  number(out, "owner_uid", d.owner_uid);
  if (d.parent_id) number(out, "parent_id", *d.parent_id);
  if (!d.dm_name.empty() && !text(out, "path", "/dev/mapper/" + d.dm_name)) return false;
  if (!d.received_from.empty()) {
    // Rare (received snapshots) and already JSON: its dump, as device_json.
    auto from = json::parse(d.received_from, nullptr, false);
    if (!from.is_discarded()) {
      out += ',';
      key(out, "received_from");
      out += from.dump(-1, ' ', false, json::error_handler_t::replace);
    }
  }
  if (d.run_clone) {
    out += ",\"run_clone\":{";
    if (!text(out, "pipeline", d.run_clone->pipeline, true) ||
        !text(out, "run", d.run_clone->run) || !text(out, "volume", d.run_clone->volume))
      return false;
    out += '}';
  }
  number(out, "size_bytes", d.size_bytes);
  if (!text(out, "state", to_string(d.state))) return false;
  if (d.step) {
    out += ",\"step\":{";
    if (!text(out, "command", d.step->command, true)) return false;
    if (d.step->exit_status) number(out, "exit_status", *d.step->exit_status);
    if (!text(out, "phase", to_string(d.step->phase)) || !text(out, "pipeline", d.step->pipeline) ||
        !text(out, "run", d.step->run) || !text(out, "step", d.step->step))
      return false;
    out += '}';
  }
  number(out, "thin_id", d.thin_id);
  if (!d.uuid.empty() && !text(out, "uuid", d.uuid)) return false;
  out += '}';
  return true;
}

}  // namespace

bool append_json_string(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  const std::size_t start = out.size();
  out += '"';
  std::size_t run = 0;  // start of the bytes not yet copied
  for (std::size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x80) {
      std::size_t n = utf8_length(s, i);
      if (n == 0) {
        out.resize(start);
        return false;
      }
      i += n;
      continue;
    }
    if (c >= 0x20 && c != '"' && c != '\\') {
      ++i;
      continue;
    }
    out.append(s.data() + run, i - run);
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        out += "\\u00";
        out += kHex[c >> 4];
        out += kHex[c & 15];
    }
    run = ++i;
  }
  out.append(s.data() + run, s.size() - run);
  out += '"';
  return true;
}

void append_device_json(std::string& out, const DeviceRecord& d, const std::string& origin_name) {
  const std::size_t start = out.size();
  if (write_device(out, d, origin_name)) return;
  out.resize(start);
  out += device_json(d, origin_name).dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string device_page_text(const std::vector<DeviceRecord>& devices, std::string_view key_name,
                             const std::optional<std::string>& next_after, const json* pool) {
  std::string list = "[";
  for (std::size_t i = 0; i < devices.size(); ++i) {
    if (i) list += ',';
    append_device_json(list, devices[i]);
  }
  list += ']';
  std::vector<std::pair<std::string, std::string>> members;
  members.emplace_back(std::string(key_name), std::move(list));
  if (next_after) {
    members.emplace_back("next_after",
                         json(*next_after).dump(-1, ' ', false, json::error_handler_t::replace));
  }
  if (pool)
    members.emplace_back("pool", pool->dump(-1, ' ', false, json::error_handler_t::replace));
  std::sort(members.begin(), members.end());
  std::string out = "{";
  for (std::size_t i = 0; i < members.size(); ++i) {
    if (i) out += ',';
    append_json_string(out, members[i].first);
    out += ':';
    out += members[i].second;
  }
  out += '}';
  return out;
}

}  // namespace stepsnap::agent
