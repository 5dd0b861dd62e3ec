// The one table of environment variables the runtime reads. getenv() is called nowhere else.
//
// Each variable has a name, a default and a description; `dsv4 env` prints the table. Values are
// validated when read: a malformed value is an Error(kInvalidArgument) naming the variable.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace dsv4::env {

struct Var {
  std::string_view name;
  std::string_view default_value;
  std::string_view description;
};

// The table. Add new variables here and nowhere else.
inline constexpr Var kLogLevel{"DSV4_LOG_LEVEL", "info", "log threshold: trace|debug|info|warn|error|off"};
inline constexpr Var kLogAllRanks{"DSV4_LOG_ALL_RANKS", "0", "1: print INFO/DEBUG lines on every rank, not only rank 0"};
inline constexpr Var kNumThreads{"DSV4_NUM_THREADS", "0", "CPU kernel threads per rank; 0 = hardware threads / local ranks"};
inline constexpr Var kDeterministic{"DSV4_DETERMINISTIC", "0",
                                    "1: fixed reduction order, results independent of layout and batch"};
inline constexpr Var kNumerics{"DSV4_NUMERICS", "reference", "default numerics mode: reference|plain"};
inline constexpr Var kCommTimeoutS{"DSV4_COMM_TIMEOUT_S", "600",
                                   "seconds a collective may wait for a peer before the job is aborted"};
// Read by ModelGroups::parallel (runtime/model/model_parallel.cc); every rank of a job must see the same values
// (the model checks its groups agree when it is made).
inline constexpr Var kPipelineMinTokens{"DSV4_PIPELINE_MIN_TOKENS", "256",
                                        "chunks of at least this many tokens run as two micro-batches on two threads "
                                        "(0: never)"};
inline constexpr Var kCpOverlap{"DSV4_CP_OVERLAP", "1",
                                "1: a CP attention layer runs its exchanges beside compute on a helper thread"};
inline constexpr Var kCommDelayUs{"DSV4_COMM_DELAY_US", "0",
                                  "benchmark switch: every mpi / inproc collective first sleeps this many "
                                  "microseconds (an emulated slower interconnect)"};
inline constexpr Var kCommDelayMbps{"DSV4_COMM_DELAY_MBPS", "0",
                                    "benchmark switch: every mpi collective also sleeps its received bytes at this "
                                    "many MB/s (0: no bandwidth term)"};
inline constexpr Var kFaultInject{"DSV4_FAULT_INJECT", "",
                                  "test switch: 'rank=R,at=POINT' makes rank R throw at a named point"};
inline constexpr Var kSharedDir{"DSV4_SHARED_DIR", "",
                                "folder holding shared data (tokenizer); default: ../shared beside the source tree"};
// Set by MPI launchers, only tested for presence (never set them): a model tool started without any of them is
// one plain process and skips MPI (a singleton MPI_Init costs about 0.5 s).
inline constexpr Var kOmpiWorldSize{"OMPI_COMM_WORLD_SIZE", "", "read only: set by Open MPI's mpirun in every rank"};
inline constexpr Var kPmixRank{"PMIX_RANK", "", "read only: set by PMIx launchers (mpirun, srun --mpi=pmix)"};
inline constexpr Var kPmiRank{"PMI_RANK", "", "read only: set by PMI launchers (MPICH's mpiexec, srun --mpi=pmi2)"};
// Tested for presence only: dsv4-launch forwards it to the ranks (mpirun -x) when it is set; Open MPI warns
// about forwarding an unset variable.
inline constexpr Var kLdLibraryPath{"LD_LIBRARY_PATH", "", "read only: forwarded to the ranks by dsv4-launch run"};

/// Every variable, for `dsv4 env` and the start-up printout.
std::span<const Var> all_vars();

/// The raw value, or the default when unset.
std::string get_string(const Var& var);
/// Parses 0/1/true/false/yes/no/on/off; anything else throws naming the variable.
bool get_bool(const Var& var);
/// Parses a decimal integer within [min_value, max_value]; anything else throws naming the variable.
int64_t get_int(const Var& var, int64_t min_value = INT64_MIN, int64_t max_value = INT64_MAX);
/// True when the variable is set in the environment (even to an empty string).
bool is_set(const Var& var);

}  // namespace dsv4::env
