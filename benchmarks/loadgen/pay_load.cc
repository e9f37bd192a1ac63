// A cheap load generator for benchmarks/pay_throughput.py: the same load as its Python
// run_pay_load / run_echo_load, but costing the 2-core box a fraction of the CPU, so
// that the benchmark measures the server rather than the client.
//
//   pay_load pay  --address HOST:PORT --api-key KEY --tokens FILE --seconds S
//                 [--concurrency 64]
//   pay_load echo --address HOST:PORT --seconds S [--concurrency 64]
//
// Prints "started" when the load begins (channels connected, and in pay mode the
// merchant's event stream started), "finished" when the workers have stopped, then one
// line of JSON with the results. Warnings go to stderr.
//
// Every call goes through one CompletionQueue served by the main thread: no locks, no
// callback executor, no busy polling (the queue blocks in epoll between completions).
// Built by benchmarks/loadgen/build.sh.

#include <absl/synchronization/mutex.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "protos/scanpay/v1/merchant.grpc.pb.h"
#include "protos/scanpay/v1/wallet.grpc.pb.h"

namespace {

namespace v1 = scanpay::v1;
using Clock = std::chrono::steady_clock;

constexpr int kTills = 8;         // merchant connections, as in pay_throughput.py
constexpr int kEchoChannels = 4;  // as run_echo_load
constexpr auto kConnectTimeout = std::chrono::seconds(10);
constexpr auto kEventWait = std::chrono::seconds(10);  // for the last events

double Since(Clock::time_point t0, Clock::time_point t1) {
  return std::chrono::duration<double>(t1 - t0).count();
}

// user + system CPU of this process, all threads (gRPC's own included).
double CpuSeconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

// The names Python's grpc.StatusCode uses, so that both clients report alike.
const char* CodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK: return "OK";
    case grpc::StatusCode::CANCELLED: return "CANCELLED";
    case grpc::StatusCode::UNKNOWN: return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND: return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS: return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED: return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED: return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE: return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED: return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL: return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE: return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS: return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED: return "UNAUTHENTICATED";
    default: return "UNKNOWN";
  }
}

// pct() of pay_throughput.py: the value at round(p/100*(n-1)) of the sorted values,
// rounding half to even like Python's round(); NaN when there are none.
double Pct(std::vector<double> values, double p) {
  if (values.empty()) return NAN;
  std::sort(values.begin(), values.end());
  const double at = std::nearbyint(p / 100 * static_cast<double>(values.size() - 1));
  return values[std::min(values.size() - 1, static_cast<size_t>(at))];
}

// A JSON number rounded to `digits` decimals; NaN as Python's json writes it.
std::string Num(double v, int digits) {
  if (std::isnan(v)) return "NaN";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

std::string Json(const std::map<std::string, long>& counts) {
  std::string out = "{";
  for (const auto& [name, n] : counts) {
    if (out.size() > 1) out += ", ";
    out += "\"" + name + "\": " + std::to_string(n);
  }
  return out + "}";
}

// 32 random hex digits, like uuid.uuid4().hex.
class Keys {
 public:
  Keys() : rng_(std::random_device{}()) {}
  std::string Next() {
    char buf[33];
    std::snprintf(buf, sizeof buf, "%016" PRIx64 "%016" PRIx64, rng_(), rng_());
    return buf;
  }

 private:
  std::mt19937_64 rng_;
};

[[noreturn]] void Die(const std::string& msg) {
  std::fprintf(stderr, "pay_load: %s\n", msg.c_str());
  std::fflush(stdout);
  std::_Exit(1);  // calls may be in flight: no teardown
}

// Something waiting on the CompletionQueue; its address is the tag.
class Op {
 public:
  virtual ~Op() = default;
  virtual void Done(bool ok) = 0;
};

// Serves the queue until `until()` holds or `deadline` passes; false on the deadline.
template <class Until>
bool Serve(grpc::CompletionQueue& cq, Clock::time_point deadline, Until until) {
  gpr_timespec limit = gpr_inf_future(GPR_CLOCK_MONOTONIC);
  if (deadline != Clock::time_point::max()) {
    const auto left = std::chrono::duration_cast<std::chrono::nanoseconds>(deadline - Clock::now());
    limit = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                         gpr_time_from_nanos(std::max<int64_t>(0, left.count()), GPR_TIMESPAN));
  }
  while (!until()) {
    void* tag = nullptr;
    bool ok = false;
    switch (cq.AsyncNext(&tag, &ok, limit)) {
      case grpc::CompletionQueue::GOT_EVENT:
        static_cast<Op*>(tag)->Done(ok);
        break;
      case grpc::CompletionQueue::TIMEOUT:
        return until();
      case grpc::CompletionQueue::SHUTDOWN:
        return false;
    }
  }
  return true;
}

// Connects every channel now (a call would otherwise pay for it), within a bound.
void Connect(const std::vector<std::shared_ptr<grpc::Channel>>& channels,
             const std::string& address) {
  for (const auto& ch : channels) ch->GetState(/*try_to_connect=*/true);
  const auto deadline = std::chrono::system_clock::now() + kConnectTimeout;
  for (const auto& ch : channels) {
    if (!ch->WaitForConnected(deadline)) Die("cannot connect to " + address);
  }
}

// -- pay mode --------------------------------------------------------------------------

struct PayLoad {
  grpc::CompletionQueue cq;
  Keys keys;
  std::string merchant_auth;  // "Bearer <api key>"
  Clock::time_point stop_at;
  int active = 0;  // workers still looping

  long payments = 0;
  std::vector<double> pay_lat, cycle_lat, event_lat;
  std::map<std::string, long> errors;
  // Payment id -> when its Pay was sent; taken out by its SUCCEEDED event.
  std::unordered_map<std::string, Clock::time_point> sent_at;
  std::unordered_set<std::string> seen;     // ids of SUCCEEDED events received
  std::unordered_set<std::string> pending;  // paid by us, event not received yet
};

// WatchPayments on till 0: the merchant's events, from the start of its log.
class Watcher final : public Op {
 public:
  Watcher(PayLoad& load, v1::MerchantService::Stub& stub) : load_(load) {
    ctx_.AddMetadata("authorization", load.merchant_auth);
    v1::WatchPaymentsRequest req;
    req.set_after_cursor("");
    reader_ = stub.PrepareAsyncWatchPayments(&ctx_, req, &load.cq);
    reader_->StartCall(this);
  }

  bool started() const { return started_; }
  bool ended() const { return ended_; }

  void Cancel() {
    cancelled_ = true;
    ctx_.TryCancel();
  }

  void Done(bool ok) override {
    switch (state_) {
      case State::kStart:
        if (ok) {
          started_ = true;
          Read();
        } else {
          Finish();
        }
        return;
      case State::kRead:
        if (!ok) return Finish();
        if (event_.type() == v1::PAYMENT_EVENT_TYPE_SUCCEEDED) {
          const auto now = Clock::now();
          const std::string& id = event_.payment().id();
          auto it = load_.sent_at.find(id);
          if (it != load_.sent_at.end()) {
            load_.event_lat.push_back(Since(it->second, now));
            load_.sent_at.erase(it);
          }
          load_.seen.insert(id);
          load_.pending.erase(id);
        }
        Read();
        return;
      case State::kFinish:
        ended_ = true;
        if (!cancelled_) {
          std::fprintf(stderr, "pay_load: WatchPayments ended early: %s %s\n",
                       CodeName(status_.error_code()), status_.error_message().c_str());
        }
        return;
    }
  }

 private:
  enum class State { kStart, kRead, kFinish };

  void Read() {
    state_ = State::kRead;
    reader_->Read(&event_, this);
  }
  void Finish() {
    state_ = State::kFinish;
    reader_->Finish(&status_, this);
  }

  PayLoad& load_;
  grpc::ClientContext ctx_;
  std::unique_ptr<grpc::ClientAsyncReader<v1::PaymentEvent>> reader_;
  v1::PaymentEvent event_;
  grpc::Status status_;
  State state_ = State::kStart;
  bool started_ = false, ended_ = false, cancelled_ = false;
};

// One payer: CreatePayment on its till -> ResolveQr -> Pay, over and over until the
// deadline; a failed call is counted by its status code and the cycle starts over.
class Payer final : public Op {
 public:
  Payer(PayLoad& load, int i, v1::MerchantService::Stub& till, v1::WalletService::Stub& phone,
        const std::string& token)
      : load_(load), i_(i), till_(till), phone_(phone), auth_("Bearer " + token) {}

  void Next() {
    if (Clock::now() >= load_.stop_at) {
      --load_.active;
      return;
    }
    ++n_;
    t0_ = Clock::now();
    NewContext(load_.merchant_auth);
    create_.set_order_id("B" + std::to_string(i_) + "-" + std::to_string(n_));
    create_.mutable_amount()->set_amount_minor(100 + n_ % 900);
    create_.mutable_amount()->set_currency("EUR");
    create_.set_idempotency_key(load_.keys.Next());
    payment_.Clear();
    create_call_ = till_.PrepareAsyncCreatePayment(&*ctx_, create_, &load_.cq);
    create_call_->StartCall();
    state_ = State::kCreate;
    create_call_->Finish(&payment_, &status_, this);
  }

  void Done(bool /*ok: always true for a unary call's Finish*/) override {
    switch (state_) {
      case State::kCreate:
        create_call_.reset();
        if (!status_.ok()) return Failed();
        NewContext(auth_);
        resolve_.set_payload(payment_.qr_payload());
        quote_.Clear();
        resolve_call_ = phone_.PrepareAsyncResolveQr(&*ctx_, resolve_, &load_.cq);
        resolve_call_->StartCall();
        state_ = State::kResolve;
        resolve_call_->Finish(&quote_, &status_, this);
        return;
      case State::kResolve:
        resolve_call_.reset();
        if (!status_.ok()) return Failed();
        t1_ = Clock::now();
        load_.sent_at[payment_.id()] = t1_;
        NewContext(auth_);
        pay_.set_quote_id(quote_.quote_id());
        pay_.set_idempotency_key(load_.keys.Next());
        receipt_.Clear();
        pay_call_ = phone_.PrepareAsyncPay(&*ctx_, pay_, &load_.cq);
        pay_call_->StartCall();
        state_ = State::kPay;
        pay_call_->Finish(&receipt_, &status_, this);
        return;
      case State::kPay: {
        pay_call_.reset();
        if (!status_.ok()) return Failed();
        const auto t2 = Clock::now();
        load_.pay_lat.push_back(Since(t1_, t2));
        load_.cycle_lat.push_back(Since(t0_, t2));
        if (!load_.seen.count(payment_.id())) load_.pending.insert(payment_.id());
        ++load_.payments;
        Next();
        return;
      }
    }
  }

 private:
  enum class State { kCreate, kResolve, kPay };

  void NewContext(const std::string& auth) {
    ctx_.emplace();  // a ClientContext serves one call only
    ctx_->AddMetadata("authorization", auth);
  }

  void Failed() {
    ++load_.errors[CodeName(status_.error_code())];
    Next();
  }

  PayLoad& load_;
  const int i_;
  v1::MerchantService::Stub& till_;
  v1::WalletService::Stub& phone_;
  const std::string auth_;
  long n_ = 0;
  State state_ = State::kCreate;
  Clock::time_point t0_, t1_;
  std::optional<grpc::ClientContext> ctx_;
  grpc::Status status_;
  v1::CreatePaymentRequest create_;
  v1::Payment payment_;
  v1::ResolveQrRequest resolve_;
  v1::Quote quote_;
  v1::PayRequest pay_;
  v1::Receipt receipt_;
  std::unique_ptr<grpc::ClientAsyncResponseReader<v1::Payment>> create_call_;
  std::unique_ptr<grpc::ClientAsyncResponseReader<v1::Quote>> resolve_call_;
  std::unique_ptr<grpc::ClientAsyncResponseReader<v1::Receipt>> pay_call_;
};

// Drains and shuts the queue down; every call on it must have completed.
// Prints "started", runs every worker until the load's deadline, prints "finished";
// returns the wall time and this process's CPU time in between.
template <typename Load, typename Worker>
std::pair<double, double> RunWorkers(Load& load, std::vector<std::unique_ptr<Worker>>& workers,
                                     double seconds) {
  std::printf("started\n");
  std::fflush(stdout);
  const double cpu0 = CpuSeconds();
  const auto started = Clock::now();
  load.stop_at = started + std::chrono::duration_cast<Clock::duration>(
                               std::chrono::duration<double>(seconds));
  load.active = static_cast<int>(workers.size());
  for (auto& w : workers) w->Next();
  Serve(load.cq, Clock::time_point::max(), [&] { return load.active == 0; });
  const double elapsed = Since(started, Clock::now());
  const double client_cpu = CpuSeconds() - cpu0;
  std::printf("finished\n");
  std::fflush(stdout);
  return {elapsed, client_cpu};
}

void ShutDown(grpc::CompletionQueue& cq) {
  cq.Shutdown();
  void* tag;
  bool ok;
  while (cq.Next(&tag, &ok)) {
  }
}

int RunPay(const std::string& address, const std::string& api_key,
           const std::vector<std::string>& tokens, double seconds, int concurrency) {
  PayLoad load;
  load.merchant_auth = "Bearer " + api_key;

  // A connection per till and per phone, as in a shop (and so that several server
  // processes all get work). Channels with identical arguments would share one
  // connection: a distinct argument each, and no global subchannel pool, keeps them apart.
  auto channel = [&](int n) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    args.SetInt("scanpay.bench_connection", n);
    return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
  };
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  std::vector<std::unique_ptr<v1::MerchantService::Stub>> tills;
  std::vector<std::unique_ptr<v1::WalletService::Stub>> phones;
  for (int n = 0; n < kTills; ++n) {
    channels.push_back(channel(n));
    tills.push_back(v1::MerchantService::NewStub(channels.back()));
  }
  for (int n = 0; n < concurrency; ++n) {
    channels.push_back(channel(kTills + n));
    phones.push_back(v1::WalletService::NewStub(channels.back()));
  }
  Connect(channels, address);

  Watcher watcher(load, *tills[0]);
  Serve(load.cq, Clock::now() + kConnectTimeout,
        [&] { return watcher.started() || watcher.ended(); });
  if (!watcher.started()) Die("WatchPayments did not start");

  std::vector<std::unique_ptr<Payer>> payers;
  for (int i = 0; i < concurrency; ++i) {
    payers.push_back(std::make_unique<Payer>(load, i, *tills[i % kTills], *phones[i],
                                             tokens[i % tokens.size()]));
  }
  const auto [elapsed, client_cpu] = RunWorkers(load, payers, seconds);

  // Wait (bounded) for the last events; no use once the stream has ended.
  Serve(load.cq, Clock::now() + kEventWait,
        [&] { return load.pending.empty() || watcher.ended(); });
  if (!watcher.ended()) {
    watcher.Cancel();
    Serve(load.cq, Clock::now() + kConnectTimeout, [&] { return watcher.ended(); });
  }
  const double done = static_cast<double>(load.payments);
  std::printf(
      "{\"payments\": %ld, \"elapsed_s\": %s, \"pay_per_s\": %s, \"pay_p50_ms\": %s, "
      "\"pay_p99_ms\": %s, \"cycle_p50_ms\": %s, \"cycle_p99_ms\": %s, "
      "\"event_p50_ms\": %s, \"event_p99_ms\": %s, \"events_missing\": %zu, "
      "\"errors\": %s, \"client_cpu_s\": %s}\n",
      load.payments, Num(elapsed, 2).c_str(), Num(done / elapsed, 1).c_str(),
      Num(Pct(load.pay_lat, 50) * 1000, 2).c_str(), Num(Pct(load.pay_lat, 99) * 1000, 2).c_str(),
      Num(Pct(load.cycle_lat, 50) * 1000, 2).c_str(),
      Num(Pct(load.cycle_lat, 99) * 1000, 2).c_str(),
      Num(Pct(load.event_lat, 50) * 1000, 2).c_str(),
      Num(Pct(load.event_lat, 99) * 1000, 2).c_str(), load.pending.size(),
      Json(load.errors).c_str(), Num(client_cpu, 6).c_str());
  std::fflush(stdout);
  if (!watcher.ended()) std::_Exit(0);  // the stream would not end: leave it
  ShutDown(load.cq);
  return 0;
}

// -- echo mode -------------------------------------------------------------------------

const std::string kEchoMethod = "/bench.Echo/Echo";  // must outlive the calls

struct EchoLoad {
  grpc::CompletionQueue cq;
  Clock::time_point stop_at;
  int active = 0;
  long calls = 0;
  std::map<std::string, long> errors;
  grpc::ByteBuffer payload;
};

// One caller of /bench.Echo/Echo with 200 raw bytes, until the deadline.
class Echoer final : public Op {
 public:
  Echoer(EchoLoad& load, grpc::GenericStub& stub) : load_(load), stub_(stub) {}

  void Next() {
    if (Clock::now() >= load_.stop_at) {
      --load_.active;
      return;
    }
    ctx_.emplace();
    call_ = stub_.PrepareUnaryCall(&*ctx_, kEchoMethod, load_.payload, &load_.cq);
    call_->StartCall();
    call_->Finish(&reply_, &status_, this);
  }

  void Done(bool /*ok*/) override {
    call_.reset();
    if (status_.ok()) {
      ++load_.calls;
    } else {
      ++load_.errors[CodeName(status_.error_code())];
    }
    Next();
  }

 private:
  EchoLoad& load_;
  grpc::GenericStub& stub_;
  std::optional<grpc::ClientContext> ctx_;
  grpc::ByteBuffer reply_;
  grpc::Status status_;
  std::unique_ptr<grpc::GenericClientAsyncResponseReader> call_;
};

int RunEcho(const std::string& address, double seconds, int concurrency) {
  EchoLoad load;
  const std::string bytes(200, 'x');
  grpc::Slice slice(bytes);
  load.payload = grpc::ByteBuffer(&slice, 1);
  // Default arguments, as run_echo_load's grpc.aio channels.
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  std::vector<std::unique_ptr<grpc::GenericStub>> stubs;
  for (int n = 0; n < kEchoChannels; ++n) {
    channels.push_back(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
    stubs.push_back(std::make_unique<grpc::GenericStub>(channels.back()));
  }
  Connect(channels, address);
  std::vector<std::unique_ptr<Echoer>> echoers;
  for (int i = 0; i < concurrency; ++i) {
    echoers.push_back(std::make_unique<Echoer>(load, *stubs[i % kEchoChannels]));
  }
  const auto [elapsed, client_cpu] = RunWorkers(load, echoers, seconds);
  std::printf("{\"calls\": %ld, \"calls_per_s\": %s, \"errors\": %s, \"client_cpu_s\": %s}\n",
              load.calls, Num(static_cast<double>(load.calls) / elapsed, 1).c_str(),
              Json(load.errors).c_str(), Num(client_cpu, 6).c_str());
  std::fflush(stdout);
  ShutDown(load.cq);
  return 0;
}

// -- command line ----------------------------------------------------------------------

[[noreturn]] void Usage() {
  std::fprintf(stderr,
               "usage: pay_load pay --address HOST:PORT --api-key KEY --tokens FILE "
               "--seconds S [--concurrency N]\n"
               "       pay_load echo --address HOST:PORT --seconds S [--concurrency N]\n");
  std::exit(2);
}

std::vector<std::string> ReadTokens(const std::string& path) {
  std::ifstream in(path);
  if (!in) Die("cannot read " + path);
  std::vector<std::string> tokens;
  for (std::string line; std::getline(in, line);) {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
    if (!line.empty()) tokens.push_back(line);
  }
  if (tokens.empty()) Die("no tokens in " + path);
  return tokens;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) Usage();
  // Debian builds Abseil without NDEBUG: every mutex gRPC makes and destroys then goes
  // through deadlock-cycle bookkeeping, a few percent of our CPU. A debugging aid only.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  const std::string mode = argv[1];
  std::map<std::string, std::string> opt;
  for (int a = 2; a < argc; ++a) {
    const std::string key = argv[a];
    if (key.rfind("--", 0) != 0 || a + 1 >= argc) Usage();
    opt[key.substr(2)] = argv[++a];
  }
  auto need = [&](const char* key) {
    auto it = opt.find(key);
    if (it == opt.end()) Usage();
    return it->second;
  };
  const std::string address = need("address");
  const double seconds = std::atof(need("seconds").c_str());
  const int concurrency = opt.count("concurrency") ? std::atoi(opt["concurrency"].c_str()) : 64;
  if (seconds <= 0 || concurrency <= 0) Usage();
  if (mode == "pay") {
    return RunPay(address, need("api-key"), ReadTokens(need("tokens")), seconds, concurrency);
  }
  if (mode == "echo") return RunEcho(address, seconds, concurrency);
  Usage();
}
