// Owner of one SQLite connection, shared by the catalog and the event log.
//
// Both live in one database file so that a state change and the event that
// reports it commit in one transaction: a crash can lose neither alone.
// Every write goes through a Savepoint; savepoints nest, so a catalog call
// works on its own or inside a caller's larger transaction. Work that must
// only happen once the data is durable (waking event subscribers) is queued
// with after_commit() and runs when the outermost savepoint commits; it is
// dropped if that level rolls back.
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"

namespace stepsnap::agent {

class Statement {
 public:
  Statement(Statement&& other) noexcept;
  Statement& operator=(Statement&& other) noexcept;
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  ~Statement();

  // Parameters are 1-based, as in SQLite.
  Statement& bind(int index, std::int64_t value);
  Statement& bind(int index, const std::string& value);
  Statement& bind(int index, const char* value) { return bind(index, std::string(value)); }
  Statement& bind_null(int index);
  Statement& bind(int index, const std::optional<std::int64_t>& value);
  Statement& bind(int index, const std::optional<std::string>& value);

  // true: a row is ready; false: done.
  Result<bool> step();
  // Runs to completion (for statements that return no rows).
  Status run();
  // Ready to bind and run again (SQLite refuses a bind to a statement that
  // has run until it is reset): for loops of many inserts.
  void reset();

  std::int64_t int64(int column) const;
  std::string text(int column) const;
  bool is_null(int column) const;
  std::optional<std::int64_t> opt_int64(int column) const;
  std::optional<std::string> opt_text(int column) const;

 private:
  friend class Database;
  Statement(sqlite3* db, sqlite3_stmt* stmt, std::string sql)
      : db_(db), stmt_(stmt), sql_(std::move(sql)) {}
  sqlite3* db_ = nullptr;
  sqlite3_stmt* stmt_ = nullptr;
  std::string sql_;
  int bind_error_ = SQLITE_OK;
};

class Database {
 public:
  // Opens (creating if needed) the file at path, with WAL, synchronous=FULL,
  // foreign keys on. ":memory:" works for tests.
  static Result<std::shared_ptr<Database>> open(const std::string& path);
  // A second connection to a catalog another connection writes: read-only
  // (SQLite refuses every write on it) and, thanks to WAL, never blocked by
  // nor blocking that writer. The view (agent/view) reads through one so that
  // no page request waits on the mutex snapshot work holds.
  static Result<std::shared_ptr<Database>> open_read_only(const std::string& path);
  ~Database();
  Database(const Database&) = delete;
  Database& operator=(const Database&) = delete;

  const std::string& path() const { return path_; }
  Status exec(const std::string& sql);
  Result<Statement> prepare(const std::string& sql);
  std::int64_t last_insert_rowid() const;
  int changes() const;
  std::string pragma_text(const std::string& name);

  // Held by every Savepoint and every read, so that one thread's
  // multi-statement transaction is never interleaved with another's.
  std::recursive_mutex& mutex() { return mutex_; }

  void after_commit(std::function<void()> fn);

  // Called with the text of every statement prepared from now on (empty:
  // none). For tests that check how the catalog's real queries are planned
  // (EXPLAIN QUERY PLAN), not for production use.
  void on_prepare(std::function<void(const std::string&)> fn) { on_prepare_ = std::move(fn); }

 private:
  friend class Savepoint;
  Database(sqlite3* db, std::string path) : db_(db), path_(std::move(path)) {}
  Error error(const std::string& op, const std::string& object) const;

  sqlite3* db_ = nullptr;
  std::string path_;
  std::recursive_mutex mutex_;
  int depth_ = 0;
  std::vector<std::pair<int, std::function<void()>>> pending_;
  std::function<void(const std::string&)> on_prepare_;
};

// RAII transaction level. Rolls back unless commit() succeeded.
class Savepoint {
 public:
  static Result<Savepoint> begin(Database& db);
  Savepoint(Savepoint&& other) noexcept;
  Savepoint& operator=(Savepoint&&) = delete;
  Savepoint(const Savepoint&) = delete;
  Savepoint& operator=(const Savepoint&) = delete;
  ~Savepoint();
  Status commit();

 private:
  Savepoint(Database* db, std::unique_lock<std::recursive_mutex> lock, int level)
      : db_(db), lock_(std::move(lock)), level_(level) {}
  void rollback();
  Database* db_ = nullptr;
  std::unique_lock<std::recursive_mutex> lock_;
  int level_ = 0;
  bool open_ = false;
};

// Runs fn (which returns a Status or a Result) inside one savepoint: its
// catalog changes and events commit together, or roll back together when fn
// or the commit fails.
template <typename Fn>
auto in_transaction(Database& db, Fn&& fn) -> decltype(fn()) {
  auto sp = Savepoint::begin(db);
  if (!sp) return tl::unexpected(sp.error());
  auto result = fn();
  if (!result) return result;  // the savepoint's destructor rolls back
  if (auto c = sp->commit(); !c) return tl::unexpected(c.error());
  return result;
}

}  // namespace stepsnap::agent
