#include "agent/view/html.h"

#include <cstdio>

#include "agent/events/event_log.h"

namespace stepsnap::agent::html {

std::string escape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string url_segment(std::string_view text) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : text) {
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
        c == '.' || c == '_' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

std::string link(const std::string& href, std::string_view text) {
  return "<a href=\"" + escape(href) + "\">" + escape(text) + "</a>";
}

std::string page(std::string_view title, const std::string& body) {
  std::string out =
      "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
      "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
      "<title>";
  out += escape(title);
  out += " · stepsnap</title><style>";
  out += kStylesheet;
  out +=
      "</style></head><body><nav><a class=\"brand\" href=\"/\">stepsnap</a> "
      "<a href=\"/\">Runs</a> <a href=\"/pool\">Volumes and pool</a> "
      "<a href=\"/live\">Live events</a> <a href=\"/metrics\">Metrics</a></nav><main>";
  out += body;
  out += "</main></body></html>\n";
  return out;
}

std::string duration(std::int64_t ns) {
  char buf[32];
  double v = static_cast<double>(ns);
  if (ns >= 60'000'000'000) {
    std::snprintf(buf, sizeof buf, "%.1f min", v / 60e9);
  } else if (ns >= 1'000'000'000) {
    std::snprintf(buf, sizeof buf, "%.2f s", v / 1e9);
  } else if (ns >= 1'000'000) {
    std::snprintf(buf, sizeof buf, "%.1f ms", v / 1e6);
  } else {
    std::snprintf(buf, sizeof buf, "%.0f µs", v / 1e3);
  }
  return buf;
}

std::string bytes(std::uint64_t n) {
  static const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(n);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u ? "%.1f %s" : "%.0f %s", v, units[u]);
  return buf;
}

const std::string_view kStylesheet = R"css(
body{font-family:system-ui,sans-serif;margin:0;color:#1d2330;background:#f7f8fa}
nav{background:#1d2330;padding:.6em 1.2em}nav a{color:#dfe6f2;margin-right:1.2em;text-decoration:none}
nav a.brand{font-weight:bold;color:#fff}main{padding:1em 1.5em;max-width:1200px}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}
table{border-collapse:collapse;background:#fff;margin:.5em 0}
th,td{border:1px solid #d5dae3;padding:.3em .6em;text-align:left;vertical-align:top}
th{background:#eef1f6}code,pre{background:#eef1f6;padding:.1em .3em;border-radius:3px}
pre{padding:.6em;overflow-x:auto}.state{font-weight:bold}
.ok,.succeeded,.finished{color:#17733a}.failed{color:#b3261e}.running,.holding,.finishing,.registered{color:#8a5a00}
.skipped,.pending{color:#5f6673}.restored{color:#2b5aa8}
svg text{font-family:system-ui,sans-serif;font-size:12px}
.meter{background:#e3e7ee;width:300px;height:14px;display:inline-block;vertical-align:middle}
.meter span{display:block;height:14px;background:#3b6fd1}
#events li{font-family:monospace;font-size:12px}
)css";

std::string live_script() {
  std::string types = "'events.truncated'";
  for (auto name : event_type_names()) types += ", '" + std::string(name) + "'";
  return R"js(
(function () {
  var list = document.getElementById('events');
  var status = document.getElementById('status');
  var source = new EventSource('/events');
  source.onopen = function () { status.textContent = 'connected'; };
  source.onerror = function () { status.textContent = 'reconnecting'; };
  source.onmessage = function (m) { add(m); };
  [)js" + types +
         R"js(].forEach(function (t) {
    source.addEventListener(t, add);
  });
  function add(m) {
    var li = document.createElement('li');
    li.textContent = '#' + m.lastEventId + ' ' + (m.type || 'message') + ' ' + m.data;
    list.insertBefore(li, list.firstChild);
    while (list.children.length > 500) list.removeChild(list.lastChild);
  }
})();
)js";
}

}  // namespace stepsnap::agent::html
