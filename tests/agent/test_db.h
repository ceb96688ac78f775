// A fresh catalog database in a temporary directory per test (WAL needs a
// real file: ":memory:" would silently skip it).
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <memory>
#include <string>

#include "agent/catalog/sqlite_db.h"

namespace stepsnap::agent::testing {

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "stepsnap-agent-XXXXXX").string();
    char* made = ::mkdtemp(tmpl.data());
    EXPECT_NE(made, nullptr);
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

inline std::shared_ptr<Database> open_db(const std::string& path) {
  auto db = Database::open(path);
  EXPECT_TRUE(db) << (db ? "" : db.error().message());
  return db ? *db : nullptr;
}

}  // namespace stepsnap::agent::testing
