#include "agent/api/event_subscription.h"

#include <algorithm>
#include <string>
#include <string_view>
#include <vector>

namespace stepsnap::agent {

namespace {

tl::unexpected<ApiError> truncated(std::uint64_t since, std::uint64_t oldest) {
  return tl::unexpected(ApiError{"events.truncated",
                                 "events after " + std::to_string(since) +
                                     " were pruned; the oldest kept is " + std::to_string(oldest) +
                                     "; resubscribe with since=" + std::to_string(oldest - 1) +
                                     " if the gap is acceptable, or raise --event-retention",
                                 nlohmann::json{{"oldest_seq", oldest}}});
}

}  // namespace

tl::expected<void, ApiError> stream_events(EventLog& events, const EventsSubscribeArgs& args,
                                           EventStream& stream) {
  std::uint64_t since = args.since ? *args.since : events.last_seq();
  std::uint64_t sent = 0;
  // A page as large as the log reads at once, but no more than the limit
  // still wants.
  auto page_max = [&]() -> std::size_t {
    constexpr std::uint64_t kPage = 1000;
    return static_cast<std::size_t>(args.limit ? std::min(kPage, *args.limit - sent) : kPage);
  };
  // The stored lines, not parsed: a page is spliced into the answer as it
  // is (EventStream::send_events).
  auto batch = events.read_lines_since(since, page_max());
  if (!batch) {
    return tl::unexpected(ApiError{"invalid_value", "args.since: " + batch.error().message()});
  }
  if (batch->truncated) return truncated(since, batch->oldest_available);
  if (!stream.accept(nlohmann::json{{"last_seq", batch->last_seq}})) return {};
  const std::uint64_t end = batch->last_seq;
  std::vector<std::string_view> page;
  for (;;) {
    page.clear();
    for (const auto& e : batch->events) {
      if (args.limit && sent == *args.limit) break;
      page.push_back(e.text);
      since = e.seq;
      ++sent;
    }
    if (!page.empty() && !stream.send_events(page)) return {};
    if (args.limit && sent == *args.limit) return {};
    if (!batch->events.empty()) {
      if (!args.follow && since >= end) return {};
    } else {
      if (!args.follow) return {};
      if (stream.stopping() || events.closed()) return {};
      events.wait_for(since, std::chrono::milliseconds(500));
      if (stream.stopping() || events.closed()) return {};
    }
    batch = events.read_lines_since(since, page_max());
    if (!batch) {
      return tl::unexpected(
          ApiError{"internal", "reading events after " + std::to_string(since) + ": " +
                                   batch.error().message() +
                                   "; resubscribe with since=" + std::to_string(since)});
    }
    if (batch->truncated) return truncated(since, batch->oldest_available);
  }
}

}  // namespace stepsnap::agent
