// HTML building blocks for the view's pages: escaping, URL path segments,
// the page frame with its stylesheet, and value formatting. Pure.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace stepsnap::agent::html {

// Text or attribute value: & < > " ' become entities. Every value that came
// from a user (names, labels, commands, notebook names) goes through this.
std::string escape(std::string_view text);
// One path segment, percent-encoded (RFC 3986 unreserved characters stay).
std::string url_segment(std::string_view text);
// <a href="href">text</a>, both escaped.
std::string link(const std::string& href, std::string_view text);
// The whole document: head with the stylesheet, the navigation, body.
// title is escaped; body is trusted (built from escaped parts).
std::string page(std::string_view title, const std::string& body);
// "1.25 s", "340 ms", "12 µs"
std::string duration(std::int64_t ns);
// "1.5 MiB"
std::string bytes(std::uint64_t n);

// The view's stylesheet and the live-events script, compiled in: nodes are
// often offline, so nothing is fetched from elsewhere.
extern const std::string_view kStylesheet;
// The script listens for every event type the log has, and the stream's own
// events.truncated: an SSE message with an `event:` name reaches only a
// listener for that name.
std::string live_script();

}  // namespace stepsnap::agent::html
