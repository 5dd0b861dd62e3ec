// The serving loop of rank 0 and the follower loop of the other ranks.
#include <algorithm>

#include "runtime/core/error.h"
#include "runtime/core/logging.h"
#include "runtime/kv/cpu_state_bytes.h"
#include "runtime/serve/server_internal.h"

namespace dsv4::serve {

void broadcast_plan(parallel::Bootstrap& bootstrap, v1::StepPlan& plan) {
  std::string bytes;
  uint64_t size = 0;
  if (bootstrap.rank() == 0) {
    DSV4_CHECK(plan.SerializeToString(&bytes)) << "cannot serialize step plan " << plan.step_id();
    size = bytes.size();
  }
  bootstrap.broadcast(&size, sizeof(size), 0);
  bytes.resize(size);
  if (size > 0) bootstrap.broadcast(bytes.data(), size, 0);
  if (bootstrap.rank() != 0) {
    plan.Clear();
    DSV4_CHECK(plan.ParseFromString(bytes)) << "rank " << bootstrap.rank() << ": cannot parse the step plan";
  }
}

namespace {

// What every DP replica holds after a step (rank 0's gauges).
struct ReplicaTotals {
  int64_t state_bytes = 0;  // sequence state over all replicas
  int64_t sequences = 0;    // sequences holding state over all replicas
};

// After each step every rank joins a small all-gather. Without it rank 0 (the broadcast root, which does not wait
// for receivers) would keep serving past a dead rank; with it rank 0 blocks and the launcher's abort of the job
// ends it, so clients see UNAVAILABLE. Its payload is each rank's state bytes and sequence count, so that rank 0
// reports every DP replica, not only its own: the TP ranks of a replica hold identical copies of its sequences'
// state, so the sums over ranks are divided by tp; the CP ranks hold shares of it (their bytes add up to the
// whole) and each lists every sequence, so the sequence count is divided by cp too.
ReplicaTotals step_barrier(parallel::Bootstrap& bootstrap, const Engine& engine) {
  const int64_t mine[2] = {engine.state_bytes(), static_cast<int64_t>(engine.num_sequences())};
  if (bootstrap.size() == 1) return {mine[0], mine[1]};
  std::vector<int64_t> all(2 * static_cast<size_t>(bootstrap.size()));
  bootstrap.all_gather(mine, all.data(), sizeof(mine));
  ReplicaTotals sum;
  for (size_t r = 0; r < all.size(); r += 2) {
    sum.state_bytes += all[r];
    sum.sequences += all[r + 1];
  }
  const int64_t tp = std::max(1, engine.model().shard().tp_size);
  return {sum.state_bytes / tp, sum.sequences / (tp * engine.cp_size())};
}

class BootstrapPlanChannel final : public PlanChannel {
 public:
  explicit BootstrapPlanChannel(parallel::Bootstrap& bootstrap) : bootstrap_(bootstrap) {}
  void exchange(v1::StepPlan& plan) override { broadcast_plan(bootstrap_, plan); }

 private:
  parallel::Bootstrap& bootstrap_;
};

}  // namespace

std::unique_ptr<PlanChannel> make_bootstrap_plan_channel(parallel::Bootstrap& bootstrap) {
  return std::make_unique<BootstrapPlanChannel>(bootstrap);
}

void run_follower(parallel::Bootstrap& bootstrap, Engine& engine, PlanChannel* channel) {
  DSV4_CHECK(bootstrap.rank() != 0) << "run_follower is for ranks other than 0";
  std::unique_ptr<PlanChannel> own;
  if (channel == nullptr) channel = (own = make_bootstrap_plan_channel(bootstrap)).get();
  v1::StepPlan plan;
  while (true) {
    channel->exchange(plan);
    if (plan.shutdown()) break;
    engine.step(plan);  // this rank's replica and shard; the candidates go to rank 0, which samples
    step_barrier(bootstrap, engine);
  }
}

namespace {

// Page size of the engine's state pool (the default for the private pools of an engine without one).
int64_t state_page_bytes(const Engine& engine) {
  return engine.state_pool() != nullptr ? engine.state_pool()->page_bytes() : kDefaultStatePageBytes;
}

double seconds_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

v1::FinishReason to_proto(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop: return v1::FINISH_STOP;
    case FinishReason::kLength: return v1::FINISH_LENGTH;
    case FinishReason::kToolCalls: return v1::FINISH_TOOL_CALLS;
    case FinishReason::kAborted: return v1::FINISH_ABORTED;
    case FinishReason::kError: return v1::FINISH_ERROR;
    case FinishReason::kNone: break;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

std::string token_text(const BpeTokenizer* tok, int32_t id) {
  if (tok == nullptr || !tok->is_valid_id(id)) return {};
  return utf8_lossy(tok->token_bytes(id));
}

class ServingLoop {
 public:
  ServingLoop(InferenceServer::Impl& server, const LoadedModel& loaded, Engine& engine, SchedulerLimits limits,
              PlanChannel& channel)
      : s_(server),
        loaded_(loaded),
        engine_(engine),
        channel_(channel),
        scheduler_(limits, [cfg = loaded.model->config(), page = state_page_bytes(engine),
                            mtp = static_cast<int64_t>(loaded.model->weights().mtp.size()),
                            cp = static_cast<int64_t>(engine.cp_size())](int64_t tokens) {
          // Exactly what the engine's StatePool books for a sequence at `tokens` tokens (fp32 CPU state) on the
          // busiest rank of the replica: with context parallelism CP rank 0 holds the fixed buffers and the
          // largest round-robin share of the rows, every other rank at most that.
          return cpu_state_bytes(cfg, tokens, page, mtp, cp).total();
        }) {}

  void run() {
    while (true) {
      take_arrivals_and_stops();
      if (s_.draining.load() && scheduler_.idle() && live_.empty()) break;
      if (scheduler_.idle()) {
        std::unique_lock lock(s_.mu);
        s_.cv.wait_for(lock, std::chrono::milliseconds(50));
        continue;
      }
      step();
    }
    v1::StepPlan last;
    last.set_shutdown(true);
    channel_.exchange(last);
  }

 private:
  void take_arrivals_and_stops() {
    std::deque<std::shared_ptr<RequestState>> arrivals;
    {
      std::lock_guard lock(s_.mu);
      arrivals.swap(s_.arrivals);
    }
    for (auto& r : arrivals) {
      try {
        scheduler_.enqueue(r->sequence_id, r->request.prompt, r->request.options.max_tokens,
                           sampling_plan_of(r->sequence_id, r->request.options.sampling));
        r->stream.emplace(loaded_.tokenizer_or_null(), r->request.options, loaded_.model->config().vocab_size,
                          static_cast<int64_t>(r->request.prompt.size()),
                          loaded_.model->config().max_position_embeddings);
      } catch (const std::exception& e) {
        scheduler_.cancel(r->sequence_id);
        const grpc::StatusCode code = grpc_code_for(e);
        s_.finish_request(*r, std::nullopt, {code, e.what()},
                          code == grpc::StatusCode::RESOURCE_EXHAUSTED ? "resource_exhausted" : "invalid_argument");
        continue;
      }
      s_.metrics.add_prompt_tokens(static_cast<int64_t>(r->request.prompt.size()));
      live_.emplace(r->sequence_id, std::move(r));
    }
    for (auto it = live_.begin(); it != live_.end();) {
      RequestState& r = *it->second;
      const int stop = r.stop.load();
      if (stop == 0) {
        ++it;
        continue;
      }
      scheduler_.cancel(r.sequence_id);
      if (stop == 1) {
        s_.finish_request(r, std::nullopt, {grpc::StatusCode::CANCELLED, "cancelled by the client"}, "cancelled");
      } else {
        GenerationStep tail = r.stream->abort();
        v1::GenerateResponse final = response_for(r, tail);
        s_.finish_request(r, std::move(final), grpc::Status::OK, "aborted");
      }
      it = live_.erase(it);
    }
    update_gauges();
  }

  v1::GenerateResponse response_for(RequestState& r, const GenerationStep& step) {
    v1::GenerateResponse m;
    m.set_request_id(r.request_id);
    if (!r.sent_first) {
      r.sent_first = true;
      for (const std::string& w : r.request.warnings) m.add_warnings(w);
      if (r.include_prompt_token_ids) m.mutable_prompt_token_ids()->Add(r.request.prompt.begin(), r.request.prompt.end());
    }
    const BpeTokenizer* tok = loaded_.tokenizer_or_null();
    if (step.token >= 0) {
      m.add_token_ids(step.token);
      if (r.request.options.sampling.top_logprobs > 0) {
        v1::TopLogprobs* lp = m.add_logprobs();
        lp->mutable_chosen()->set_token_id(step.token);
        lp->mutable_chosen()->set_logprob(step.logprob);
        lp->mutable_chosen()->set_text(token_text(tok, step.token));
        for (const TokenLogprob& t : step.top_logprobs) {
          v1::TokenLogprob* e = lp->add_top();
          e->set_token_id(t.id);
          e->set_logprob(t.logprob);
          e->set_text(token_text(tok, t.id));
        }
      }
    }
    m.set_reasoning_delta(step.reasoning_delta);
    m.set_content_delta(step.content_delta);
    for (const ToolCall& c : step.tool_calls) {
      v1::ToolCall* t = m.add_tool_calls();
      t->set_id(c.id);
      t->set_name(c.name);
      t->set_arguments_json(c.arguments);
    }
    if (step.finish != FinishReason::kNone) {
      m.set_finish_reason(to_proto(step.finish));
      m.mutable_usage()->set_prompt_tokens(static_cast<int32_t>(r.request.prompt.size()));
      m.mutable_usage()->set_completion_tokens(r.stream->completion_tokens());
      m.mutable_usage()->set_reasoning_tokens(r.stream->reasoning_tokens());
      const Clock::time_point now = Clock::now();
      m.mutable_timing()->set_total_seconds(seconds_between(r.arrival, now));
      if (r.stream->completion_tokens() > 0) {
        m.mutable_timing()->set_time_to_first_token_seconds(seconds_between(r.arrival, r.first_token));
      }
      if (step.finish == FinishReason::kError) m.add_warnings("output parsing failed: " + r.stream->error());
    }
    return m;
  }

  void step() {
    const Clock::time_point step_begin = Clock::now();  // serving metrics: the scheduler's own time per step
    v1::StepPlan plan = scheduler_.next_plan();
    channel_.exchange(plan);
    const Clock::time_point model_begin = Clock::now();
    // Each request's stream knows its next draw, so untruncated sampling needs only the shards' top tokens.
    std::vector<SampledCandidates> sampled =
        engine_.step(plan, [this](uint64_t id, const MergedCandidates& merged, int32_t count, bool all_in) {
          auto it = live_.find(id);
          DSV4_CHECK(it != live_.end()) << "candidates for unknown sequence " << id;
          return it->second->stream->candidates_suffice(merged, count, all_in);
        });
    all_replicas_ = step_barrier(*s_.bootstrap, engine_);
    const Clock::time_point now = Clock::now();
    for (SampledCandidates& out : sampled) {
      auto it = live_.find(out.sequence_id);
      DSV4_CHECK(it != live_.end()) << "sampled candidates for unknown sequence " << out.sequence_id;
      RequestState& r = *it->second;
      GenerationStep gs = r.stream->step(out.candidates);
      if (r.stream->completion_tokens() == 1) {
        r.first_token = now;
        s_.metrics.observe_ttft(seconds_between(r.arrival, now));
      } else {
        s_.metrics.observe_inter_token(seconds_between(r.last_token, now));
      }
      r.last_token = now;
      s_.metrics.add_generated_tokens(1);
      const bool finished = r.stream->finished();
      scheduler_.on_sampled(r.sequence_id, gs.token, finished);
      v1::GenerateResponse m = response_for(r, gs);
      if (finished) {
        s_.finish_request(r, std::move(m), grpc::Status::OK,
                          gs.finish == FinishReason::kError ? "output_error" : "ok");
        live_.erase(it);
      } else {
        r.outbox->push(std::move(m));
      }
    }
    update_gauges();
    s_.metrics.observe_step(seconds_between(model_begin, now),
                            seconds_between(step_begin, model_begin) + seconds_between(now, Clock::now()));
  }

  void update_gauges() {
    s_.metrics.set_queue(static_cast<int64_t>(scheduler_.queued()), static_cast<int64_t>(scheduler_.running()),
                         scheduler_.reserved_bytes(), all_replicas_.state_bytes, all_replicas_.sequences);
  }

  InferenceServer::Impl& s_;
  ReplicaTotals all_replicas_;  // state bytes and sequences over every DP replica after the last step (step_barrier)
  const LoadedModel& loaded_;
  Engine& engine_;
  PlanChannel& channel_;
  Scheduler scheduler_;
  std::unordered_map<uint64_t, std::shared_ptr<RequestState>> live_;
};

}  // namespace

void InferenceServer::run(const LoadedModel& loaded, Engine& engine, PlanChannel* channel) {
  Impl& s = *impl_;
  DSV4_CHECK(s.bootstrap->rank() == 0) << "InferenceServer::run is for rank 0";
  const ModelConfig& cfg = loaded.model->config();
  // The scheduler admits by the bytes the engine's pool books, so with a bounded pool it takes the pool's budget
  // (the server's main sets it from the deployment's memory) and may not promise more than the pool holds.
  const StatePool* pool = engine.state_pool();
  const bool bounded = pool != nullptr && !pool->unlimited();
  if (s.options.scheduler.state_budget_bytes <= 0) {
    s.options.scheduler.state_budget_bytes =
        bounded ? pool->budget_bytes()
                : s.options.scheduler.max_running *
                      cpu_state_bytes(cfg, 4096, state_page_bytes(engine),
                                      static_cast<int64_t>(loaded.model->weights().mtp.size()))
                          .total();
  }
  DSV4_CHECK_ARG(!bounded || s.options.scheduler.state_budget_bytes <= pool->budget_bytes())
      << "the scheduler's state budget (" << s.options.scheduler.state_budget_bytes
      << " bytes per replica) exceeds the engine's state pool (" << pool->budget_bytes() << " bytes)";
  s.options.scheduler.dp_size = engine.dp_size();
  std::unique_ptr<PlanChannel> own;
  if (channel == nullptr) channel = (own = make_bootstrap_plan_channel(*s.bootstrap)).get();
  ServingLoop loop(s, loaded, engine, s.options.scheduler, *channel);
  s.loaded = &loaded;
  s.ready.store(true);
  s.grpc_server->GetHealthCheckService()->SetServingStatus(true);
  DSV4_LOG(INFO) << "serving (state budget " << s.options.scheduler.state_budget_bytes << " bytes per replica, "
                 << s.options.scheduler.max_running << " sequences, " << s.options.scheduler.max_step_tokens
                 << " tokens per step, " << engine.dp_size() << " replicas)";
  // Drain: watched by a helper so that health flips as soon as the signal arrives, even mid-step.
  std::atomic<bool> loop_done{false};
  std::thread health_watch([&] {
    while (!loop_done.load() && !s.draining.load()) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    if (s.draining.load()) {
      s.grpc_server->GetHealthCheckService()->SetServingStatus(false);
      DSV4_LOG(INFO) << "draining: no new requests; finishing " << s.active.load() << " in flight";
      s.wake();
    }
  });
  try {
    loop.run();
  } catch (...) {
    loop_done.store(true);
    health_watch.join();
    throw;
  }
  loop_done.store(true);
  health_watch.join();
  s.grpc_server->GetHealthCheckService()->SetServingStatus(false);
  s.grpc_server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  DSV4_LOG(INFO) << "drained; server stopped";
}

}  // namespace dsv4::serve
