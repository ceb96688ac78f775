#include "agent/volumes/send_stream.h"

#include <array>
#include <cerrno>
#include <cstring>

namespace stepsnap::agent {
namespace {

using json = nlohmann::json;

void put_le(std::vector<std::uint8_t>& out, std::uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
}

std::uint64_t get_le(const std::uint8_t* p, int bytes) {
  std::uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= std::uint64_t{p[i]} << (8 * i);
  return v;
}

std::uint32_t chain_with(std::uint32_t chain, std::uint32_t crc) {
  std::uint8_t b[4];
  for (int i = 0; i < 4; ++i) b[i] = static_cast<std::uint8_t>(crc >> (8 * i));
  return crc32c(b, chain);
}

Error stream_error(std::uint64_t at, const std::string& what) {
  return Error("read send stream", "byte " + std::to_string(at), EBADMSG, what);
}

}  // namespace

json StreamHeader::to_json() const {
  return {{"block_bytes", block_bytes},
          {"volume_bytes", volume_bytes},
          {"data_blocks", data_blocks},
          {"zero_blocks", zero_blocks},
          {"snapshot", snapshot},
          {"base", base},
          {"source", source}};
}

Result<StreamHeader> header_from_json(const json& j) {
  auto bad = [](const std::string& what) {
    return fail("read send stream header", "", EBADMSG, what);
  };
  if (!j.is_object()) return bad("not a JSON object");
  StreamHeader h;
  for (auto [field, out] :
       {std::pair{"block_bytes", &h.block_bytes}, std::pair{"volume_bytes", &h.volume_bytes},
        std::pair{"data_blocks", &h.data_blocks}, std::pair{"zero_blocks", &h.zero_blocks}}) {
    auto it = j.find(field);
    if (it == j.end() || !it->is_number_unsigned()) {
      return bad(std::string(field) + " is missing or not an unsigned integer");
    }
    *out = it->get<std::uint64_t>();
  }
  // dm-thin block sizes are 64 KiB to 1 GiB; 4 KiB keeps tests small.
  if (h.block_bytes < 4096 || h.block_bytes > (1ull << 30) ||
      (h.block_bytes & (h.block_bytes - 1)) != 0) {
    return bad("block_bytes " + std::to_string(h.block_bytes) +
               " is not a power of two from 4 KiB to 1 GiB");
  }
  if (h.volume_bytes == 0 || h.volume_bytes % 512 != 0 || h.volume_bytes > (1ull << 50)) {
    return bad("volume_bytes " + std::to_string(h.volume_bytes) +
               " is not a whole number of sectors up to 1 PiB");
  }
  const std::uint64_t blocks = (h.volume_bytes + h.block_bytes - 1) / h.block_bytes;
  if (h.data_blocks > blocks || h.zero_blocks > blocks - h.data_blocks) {
    return bad("more blocks announced than the volume has");
  }
  auto snap = j.find("snapshot");
  if (snap == j.end() || !snap->is_object() || !snap->contains("uuid") ||
      !(*snap)["uuid"].is_string() || !snap->contains("name") || !(*snap)["name"].is_string()) {
    return bad("snapshot must be an object with a uuid and a name");
  }
  h.snapshot = *snap;
  auto base = j.find("base");
  if (base != j.end() && !base->is_null()) {
    if (!base->is_object() || !base->contains("uuid") || !(*base)["uuid"].is_string()) {
      return bad("base must be null or an object with a uuid");
    }
    h.base = *base;
  }
  if (auto src = j.find("source"); src != j.end() && src->is_object()) h.source = *src;
  return h;
}

Status StreamEncoder::put(std::span<const std::uint8_t> bytes) {
  if (auto r = sink_(bytes); !r) return r;
  bytes_ += bytes.size();
  return {};
}

Status StreamEncoder::record_crc(std::uint32_t crc) {
  std::vector<std::uint8_t> b;
  put_le(b, crc, 4);
  chain_ = chain_with(chain_, crc);
  return put(b);
}

Status StreamEncoder::header(const StreamHeader& header) {
  header_ = header;
  std::string text = header.to_json().dump(-1, ' ', false, json::error_handler_t::replace);
  std::vector<std::uint8_t> b(std::begin(kStreamMagic), std::end(kStreamMagic));
  put_le(b, kStreamVersion, 4);
  put_le(b, text.size(), 4);
  b.insert(b.end(), text.begin(), text.end());
  auto crc = crc32c({reinterpret_cast<const std::uint8_t*>(text.data()), text.size()});
  if (auto r = put(b); !r) return r;
  return record_crc(crc);
}

Status StreamEncoder::data(std::uint64_t first_block, std::uint32_t count,
                           std::span<const std::uint8_t> data) {
  if (count == 0 || count > kMaxRunBlocks || data.size() != count * header_.block_bytes) {
    return fail("write send stream", "data run at block " + std::to_string(first_block), EINVAL,
                "a run is 1 to 256 whole blocks");
  }
  std::vector<std::uint8_t> b{'D'};
  put_le(b, first_block, 8);
  put_le(b, count, 4);
  std::uint32_t crc = crc32c(data, crc32c(b));
  if (auto r = put(b); !r) return r;
  if (auto r = put(data); !r) return r;
  data_blocks_ += count;
  return record_crc(crc);
}

Status StreamEncoder::zero(std::uint64_t first_block, std::uint32_t count) {
  std::vector<std::uint8_t> b{'Z'};
  put_le(b, first_block, 8);
  put_le(b, count, 4);
  std::uint32_t crc = crc32c(b);
  if (auto r = put(b); !r) return r;
  zero_blocks_ += count;
  return record_crc(crc);
}

Status StreamEncoder::end() {
  std::vector<std::uint8_t> b{'E'};
  put_le(b, data_blocks_, 8);
  put_le(b, zero_blocks_, 8);
  std::uint32_t crc = crc32c(b);
  chain_ = chain_with(chain_, crc);
  put_le(b, crc, 4);
  put_le(b, chain_, 4);
  return put(b);
}

Status StreamDecoder::read_exact(std::span<std::uint8_t> out, const char* what) {
  std::size_t got = 0;
  while (got < out.size()) {
    auto n = source_(out.subspan(got));
    if (!n) return tl::unexpected(n.error());
    if (*n == 0) {
      return tl::unexpected(stream_error(
          offset_ + got,
          std::string("truncated: the stream ends inside ") + what + " (send it again, whole)"));
    }
    got += *n;
  }
  offset_ += got;
  return {};
}

Status StreamDecoder::check_crc(std::uint32_t computed, const char* what) {
  std::uint8_t b[4];
  if (auto r = read_exact(b, "a checksum"); !r) return r;
  auto stored = static_cast<std::uint32_t>(get_le(b, 4));
  if (stored != computed) {
    return tl::unexpected(
        stream_error(offset_ - 4, std::string("checksum of ") + what +
                                      " does not match: the stream is corrupt (send it again)"));
  }
  chain_ = chain_with(chain_, computed);
  return {};
}

Result<StreamHeader> StreamDecoder::header() {
  std::uint8_t fixed[16];
  if (auto r = read_exact(fixed, "the stream's first 16 bytes"); !r) {
    return tl::unexpected(r.error());
  }
  if (std::memcmp(fixed, kStreamMagic, sizeof kStreamMagic) != 0) {
    return tl::unexpected(stream_error(0, "not a stepsnap send stream (no STEPSNAP magic)"));
  }
  auto version = static_cast<std::uint32_t>(get_le(fixed + 8, 4));
  if (version != kStreamVersion) {
    return tl::unexpected(stream_error(
        8, "stream version " + std::to_string(version) + "; this agent reads version " +
               std::to_string(kStreamVersion) + " (receive it with a matching stepsnapd)"));
  }
  auto length = static_cast<std::uint32_t>(get_le(fixed + 12, 4));
  if (length == 0 || length > kMaxStreamHeaderBytes) {
    return tl::unexpected(
        stream_error(12, "header length " + std::to_string(length) + " is out of range"));
  }
  std::vector<std::uint8_t> text(length);
  if (auto r = read_exact(text, "the header"); !r) return tl::unexpected(r.error());
  if (auto r = check_crc(crc32c(text), "the header"); !r) return tl::unexpected(r.error());
  auto j = json::parse(text.begin(), text.end(), nullptr, false);
  if (j.is_discarded()) return tl::unexpected(stream_error(16, "the header is not JSON"));
  auto h = header_from_json(j);
  if (!h) return h;
  header_ = *h;
  have_header_ = true;
  return h;
}

Result<StreamRecord> StreamDecoder::next() {
  if (!have_header_ || ended_) {
    return fail("read send stream", "", EINVAL, "next() before header() or after the end");
  }
  const std::uint64_t at = offset_;
  std::uint8_t kind = 0;
  if (auto r = read_exact({&kind, 1}, "a record"); !r) return tl::unexpected(r.error());
  StreamRecord rec;
  if (kind == 'E') {
    std::uint8_t b[17] = {'E'};
    if (auto r = read_exact({b + 1, 16}, "the end record"); !r) return tl::unexpected(r.error());
    if (auto r = check_crc(crc32c(b), "the end record"); !r) return tl::unexpected(r.error());
    std::uint8_t tail[4];
    if (auto r = read_exact(tail, "the stream checksum"); !r) return tl::unexpected(r.error());
    if (static_cast<std::uint32_t>(get_le(tail, 4)) != chain_) {
      return tl::unexpected(
          stream_error(offset_ - 4,
                       "the whole-stream checksum does not match: a record is missing, "
                       "repeated or out of order (send it again)"));
    }
    if (get_le(b + 1, 8) != data_blocks_ || get_le(b + 9, 8) != zero_blocks_ ||
        data_blocks_ != header_.data_blocks || zero_blocks_ != header_.zero_blocks) {
      return tl::unexpected(
          stream_error(at, "the block counts do not match the header's (send it again)"));
    }
    std::uint8_t extra;
    auto n = source_({&extra, 1});
    if (!n) return tl::unexpected(n.error());
    if (*n != 0) {
      return tl::unexpected(stream_error(offset_, "bytes after the end record (not one stream?)"));
    }
    ended_ = true;
    rec.kind = StreamRecord::Kind::end;
    return rec;
  }
  if (kind != 'D' && kind != 'Z') {
    return tl::unexpected(stream_error(at, "unknown record kind " + std::to_string(kind)));
  }
  std::uint8_t b[13] = {kind};
  if (auto r = read_exact({b + 1, 12}, "a record header"); !r) return tl::unexpected(r.error());
  rec.first_block = get_le(b + 1, 8);
  rec.count = static_cast<std::uint32_t>(get_le(b + 9, 4));
  const std::uint64_t blocks =
      (header_.volume_bytes + header_.block_bytes - 1) / header_.block_bytes;
  if (rec.count == 0 || rec.count > kMaxRunBlocks || rec.first_block >= blocks ||
      rec.count > blocks - rec.first_block) {
    return tl::unexpected(
        stream_error(at, "a run of " + std::to_string(rec.count) + " blocks at block " +
                             std::to_string(rec.first_block) + " does not fit the volume"));
  }
  std::uint32_t crc = crc32c(b);
  if (kind == 'D') {
    rec.kind = StreamRecord::Kind::data;
    rec.payload.resize(rec.count * header_.block_bytes);
    if (auto r = read_exact(rec.payload, "a data run"); !r) return tl::unexpected(r.error());
    crc = crc32c(rec.payload, crc);
    data_blocks_ += rec.count;
  } else {
    rec.kind = StreamRecord::Kind::zero;
    zero_blocks_ += rec.count;
  }
  if (data_blocks_ > header_.data_blocks || zero_blocks_ > header_.zero_blocks) {
    return tl::unexpected(stream_error(at, "more blocks than the header announced"));
  }
  if (auto r = check_crc(crc, kind == 'D' ? "a data run" : "a zero run"); !r) {
    return tl::unexpected(r.error());
  }
  return rec;
}

}  // namespace stepsnap::agent
