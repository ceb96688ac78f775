#include "agent/catalog/sqlite_db.h"

#include <cerrno>

#include "common/log.h"

namespace stepsnap::agent {

namespace {

// SQLite result codes are not errno values; map the few a user can act on so
// the message carries familiar words ("No space left on device").
int errno_for(int rc) {
  switch (rc & 0xff) {
    case SQLITE_FULL:
      return ENOSPC;
    case SQLITE_IOERR:
      return EIO;
    case SQLITE_READONLY:
      return EROFS;
    case SQLITE_PERM:
    case SQLITE_AUTH:
      return EACCES;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return EBUSY;
    case SQLITE_CANTOPEN:
      return ENOENT;
    case SQLITE_CONSTRAINT:
      return EEXIST;
    default:
      return 0;
  }
}

}  // namespace

// ---- Statement -------------------------------------------------------------

Statement::Statement(Statement&& other) noexcept
    : db_(other.db_),
      stmt_(std::exchange(other.stmt_, nullptr)),
      sql_(std::move(other.sql_)),
      bind_error_(other.bind_error_) {}

Statement& Statement::operator=(Statement&& other) noexcept {
  if (this != &other) {
    if (stmt_) sqlite3_finalize(stmt_);
    db_ = other.db_;
    stmt_ = std::exchange(other.stmt_, nullptr);
    sql_ = std::move(other.sql_);
    bind_error_ = other.bind_error_;
  }
  return *this;
}

Statement::~Statement() {
  if (stmt_) sqlite3_finalize(stmt_);
}

Statement& Statement::bind(int index, std::int64_t value) {
  int rc = sqlite3_bind_int64(stmt_, index, value);
  if (rc != SQLITE_OK) bind_error_ = rc;
  return *this;
}

Statement& Statement::bind(int index, const std::string& value) {
  int rc = sqlite3_bind_text(stmt_, index, value.data(), static_cast<int>(value.size()),
                             SQLITE_TRANSIENT);
  if (rc != SQLITE_OK) bind_error_ = rc;
  return *this;
}

Statement& Statement::bind_null(int index) {
  int rc = sqlite3_bind_null(stmt_, index);
  if (rc != SQLITE_OK) bind_error_ = rc;
  return *this;
}

Statement& Statement::bind(int index, const std::optional<std::int64_t>& value) {
  return value ? bind(index, *value) : bind_null(index);
}

Statement& Statement::bind(int index, const std::optional<std::string>& value) {
  return value ? bind(index, *value) : bind_null(index);
}

Result<bool> Statement::step() {
  if (bind_error_ != SQLITE_OK) {
    return fail("sqlite bind", sql_, errno_for(bind_error_), sqlite3_errstr(bind_error_));
  }
  int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  return fail("sqlite step", sql_, errno_for(rc), sqlite3_errmsg(db_));
}

Status Statement::run() {
  for (;;) {
    auto row = step();
    if (!row) return tl::unexpected(row.error());
    if (!*row) return {};
  }
}

void Statement::reset() {
  sqlite3_reset(stmt_);
  bind_error_ = SQLITE_OK;
}

std::int64_t Statement::int64(int column) const { return sqlite3_column_int64(stmt_, column); }

std::string Statement::text(int column) const {
  auto* p = sqlite3_column_text(stmt_, column);
  int n = sqlite3_column_bytes(stmt_, column);
  return p ? std::string(reinterpret_cast<const char*>(p), static_cast<size_t>(n)) : std::string();
}

bool Statement::is_null(int column) const {
  return sqlite3_column_type(stmt_, column) == SQLITE_NULL;
}

std::optional<std::int64_t> Statement::opt_int64(int column) const {
  if (is_null(column)) return std::nullopt;
  return int64(column);
}

std::optional<std::string> Statement::opt_text(int column) const {
  if (is_null(column)) return std::nullopt;
  return text(column);
}

// ---- Database --------------------------------------------------------------

Result<std::shared_ptr<Database>> Database::open(const std::string& path) {
  sqlite3* raw = nullptr;
  int rc = sqlite3_open_v2(
      path.c_str(), &raw,
      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX | SQLITE_OPEN_NOFOLLOW,
      nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = raw ? sqlite3_errmsg(raw) : sqlite3_errstr(rc);
    sqlite3_close(raw);
    return fail("open catalog", path, errno_for(rc),
                msg + "; check that the state directory exists and is writable");
  }
  std::shared_ptr<Database> db(new Database(raw, path));
  sqlite3_extended_result_codes(raw, 1);
  // WAL: readers (event subscribers) never block the writer, and a commit is
  // one append to the log. synchronous=FULL: the catalog records intents
  // *before* kernel calls whose results survive power loss (dm-thin metadata
  // commits), so our record must be at least as durable as the kernel's; with
  // NORMAL a power cut could forget an intent whose device exists. The cost is
  // one fsync per commit, small next to a suspend/resume.
  for (const char* pragma : {"PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL",
                             "PRAGMA foreign_keys=ON", "PRAGMA busy_timeout=5000"}) {
    auto st = db->prepare(pragma);
    if (!st) return tl::unexpected(st.error().context("open catalog " + path));
    if (auto r = st->run(); !r) return tl::unexpected(r.error().context("open catalog " + path));
  }
  if (path != ":memory:" && db->pragma_text("journal_mode") != "wal") {
    return fail("open catalog", path, 0,
                "the file system refused WAL mode; put the state directory on a local file system");
  }
  return db;
}

Result<std::shared_ptr<Database>> Database::open_read_only(const std::string& path) {
  sqlite3* raw = nullptr;
  int rc =
      sqlite3_open_v2(path.c_str(), &raw,
                      SQLITE_OPEN_READONLY | SQLITE_OPEN_FULLMUTEX | SQLITE_OPEN_NOFOLLOW, nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = raw ? sqlite3_errmsg(raw) : sqlite3_errstr(rc);
    sqlite3_close(raw);
    return fail("open catalog read-only", path, errno_for(rc), msg);
  }
  std::shared_ptr<Database> db(new Database(raw, path));
  sqlite3_extended_result_codes(raw, 1);
  // query_only: a belt to SQLITE_OPEN_READONLY's braces. busy_timeout: a
  // WAL reader only waits while the writer checkpoints or recovers.
  for (const char* pragma : {"PRAGMA query_only=ON", "PRAGMA busy_timeout=5000"}) {
    auto st = db->prepare(pragma);
    if (!st) return tl::unexpected(st.error().context("open catalog " + path));
    if (auto r = st->run(); !r) return tl::unexpected(r.error().context("open catalog " + path));
  }
  return db;
}

Database::~Database() {
  if (db_) sqlite3_close_v2(db_);
}

Error Database::error(const std::string& op, const std::string& object) const {
  int rc = sqlite3_extended_errcode(db_);
  return fail(op, object, errno_for(rc), sqlite3_errmsg(db_)).value();
}

Status Database::exec(const std::string& sql) {
  std::lock_guard lock(mutex_);
  char* msg = nullptr;
  int rc = sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &msg);
  if (rc != SQLITE_OK) {
    std::string text = msg ? msg : sqlite3_errstr(rc);
    sqlite3_free(msg);
    return fail("sqlite exec", sql.substr(0, 60), errno_for(rc), text);
  }
  return {};
}

Result<Statement> Database::prepare(const std::string& sql) {
  if (on_prepare_) on_prepare_(sql);
  sqlite3_stmt* stmt = nullptr;
  int rc = sqlite3_prepare_v2(db_, sql.c_str(), static_cast<int>(sql.size()), &stmt, nullptr);
  if (rc != SQLITE_OK) return tl::unexpected(error("sqlite prepare", sql));
  return Statement(db_, stmt, sql);
}

std::int64_t Database::last_insert_rowid() const { return sqlite3_last_insert_rowid(db_); }
int Database::changes() const { return sqlite3_changes(db_); }

std::string Database::pragma_text(const std::string& name) {
  auto st = prepare("PRAGMA " + name);
  if (!st) return {};
  auto row = st->step();
  return row && *row ? st->text(0) : std::string();
}

void Database::after_commit(std::function<void()> fn) {
  std::lock_guard lock(mutex_);
  if (depth_ == 0) {
    // Autocommit: the statement that preceded this call is already durable.
    fn();
    return;
  }
  pending_.emplace_back(depth_, std::move(fn));
}

// ---- Savepoint -------------------------------------------------------------

Result<Savepoint> Savepoint::begin(Database& db) {
  std::unique_lock lock(db.mutex_);
  int level = db.depth_ + 1;
  // The outermost level is BEGIN IMMEDIATE: it takes the write lock up front,
  // so a commit never fails half-way with SQLITE_BUSY on lock upgrade.
  std::string sql = level == 1 ? "BEGIN IMMEDIATE" : "SAVEPOINT sp" + std::to_string(level);
  if (auto r = db.exec(sql); !r) return tl::unexpected(r.error());
  db.depth_ = level;
  Savepoint sp(&db, std::move(lock), level);
  sp.open_ = true;
  return sp;
}

Savepoint::Savepoint(Savepoint&& other) noexcept
    : db_(other.db_),
      lock_(std::move(other.lock_)),
      level_(other.level_),
      open_(std::exchange(other.open_, false)) {}

Savepoint::~Savepoint() {
  if (open_) rollback();
}

Status Savepoint::commit() {
  if (!open_) return fail("commit", "transaction", 0, "already finished");
  std::string sql = level_ == 1 ? "COMMIT" : "RELEASE sp" + std::to_string(level_);
  if (auto r = db_->exec(sql); !r) {
    rollback();
    return r;
  }
  open_ = false;
  db_->depth_ = level_ - 1;
  if (level_ == 1) {
    auto work = std::move(db_->pending_);
    db_->pending_.clear();
    for (auto& [level, fn] : work) fn();
  }
  return {};
}

void Savepoint::rollback() {
  open_ = false;
  std::string sql = level_ == 1 ? "ROLLBACK"
                                : "ROLLBACK TO sp" + std::to_string(level_) + "; RELEASE sp" +
                                      std::to_string(level_);
  if (auto r = db_->exec(sql); !r) log::error("catalog rollback failed: " + r.error().message());
  db_->depth_ = level_ - 1;
  std::erase_if(db_->pending_, [&](const auto& p) { return p.first >= level_; });
}

}  // namespace stepsnap::agent
