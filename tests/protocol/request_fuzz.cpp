// libFuzzer target for the request parser: any bytes must give a Request or a
// RequestError, never a crash, a hang, or an exception; and every outcome must
// render to a response line that parses back as JSON.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "protocol/request.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view line(reinterpret_cast<const char*>(data), size);
  auto r = stepsnap::protocol::parse_request(line);
  std::string out =
      r ? stepsnap::protocol::ok_response(r->id, nullptr) : stepsnap::protocol::error_response(r.error());
  auto back = nlohmann::json::parse(out, nullptr, /*allow_exceptions=*/false);
  if (back.is_discarded() || !back.is_object()) std::abort();
  if (!r && r.error().message.empty()) std::abort();
  return 0;
}
