/* mpi_time: a PMPI interposer that measures, per rank, the wall time spent inside MPI communication calls and
 * the rank's peak resident memory, without touching the program. The scaling runner builds it with mpicc and
 * loads it with LD_PRELOAD (mpirun -x LD_PRELOAD=...):
 *
 *   mpicc -O2 -shared -fPIC -o libmpi_time.so scripts/scaling/mpi_time.c
 *
 * At MPI_Finalize each rank prints one line to stderr:
 *
 *   [mpi_time] rank=R size=N wall_s=W comm_s=C calls=K bytes=B vmhwm_kib=M cpu_s=U
 *
 * With MPI_TIME_MARK_BYTES=B set, every MPI_Bcast of exactly B bytes is also recorded as a step mark (its
 * CLOCK_MONOTONIC time, this rank's communication time and CPU time so far), printed at MPI_Finalize as
 *
 *   [mpi_time_marks] rank=R t=T1,T2,... comm=C1,C2,... cpu=U1,U2,...
 *
 * The tools' step loop (runtime/serve/serving_loop.cc broadcast_plan) starts every step with an 8-byte
 * broadcast of the plan size, so B=8 marks step starts: the runner derives prefill and decode step times and
 * the communication share of the steps from them.
 *
 * wall_s runs from MPI_Init to MPI_Finalize, comm_s is the sum over the intercepted calls (the collectives and
 * point-to-point calls that parallel/comm_mpi.cc uses). Time waiting inside a collective for a slower rank
 * counts as communication: that is what a rank loses to it. bytes counts what this rank sends. vmhwm_kib is
 * VmHWM of /proc/self/status (peak resident set). cpu_s is the rank's user + system CPU time (all its
 * threads, getrusage): cpu_s / wall_s says how many cores the rank really got on a shared machine. The
 * program's own time split (load, prefill, decode) is not visible here; the runner takes it from the output.
 */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static double g_start = 0.0, g_comm = 0.0;
static long long g_calls = 0;
static double g_bytes = 0.0;
enum { kMaxMarks = 1 << 16 };
static double g_mark_t[kMaxMarks], g_mark_comm[kMaxMarks], g_mark_cpu[kMaxMarks];
static int g_marks = 0, g_mark_bytes = -1;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double type_bytes(MPI_Datatype t, double count) {
  int size = 0;
  PMPI_Type_size(t, &size);
  return (double)size * count;
}

static double cpu_seconds(void);

static int comm_size(MPI_Comm c) {
  int n = 1;
  PMPI_Comm_size(c, &n);
  return n;
}

#define TIMED(call)        \
  double t0_ = now_s();    \
  int rc_ = call;          \
  g_comm += now_s() - t0_; \
  ++g_calls;               \
  return rc_

int MPI_Init(int* argc, char*** argv) {
  int rc = PMPI_Init(argc, argv);
  g_start = now_s();
  const char* b = getenv("MPI_TIME_MARK_BYTES");
  if (b) g_mark_bytes = atoi(b);
  return rc;
}

int MPI_Init_thread(int* argc, char*** argv, int required, int* provided) {
  int rc = PMPI_Init_thread(argc, argv, required, provided);
  g_start = now_s();
  const char* b = getenv("MPI_TIME_MARK_BYTES");
  if (b) g_mark_bytes = atoi(b);
  return rc;
}

int MPI_Allgather(const void* sb, int sc, MPI_Datatype st, void* rb, int rc, MPI_Datatype rt, MPI_Comm c) {
  g_bytes += type_bytes(st, sc) * (comm_size(c) - 1);
  TIMED(PMPI_Allgather(sb, sc, st, rb, rc, rt, c));
}

int MPI_Allgatherv(const void* sb, int sc, MPI_Datatype st, void* rb, const int rc[], const int displs[],
                   MPI_Datatype rt, MPI_Comm c) {
  g_bytes += type_bytes(st, sc) * (comm_size(c) - 1);
  TIMED(PMPI_Allgatherv(sb, sc, st, rb, rc, displs, rt, c));
}

int MPI_Allreduce(const void* sb, void* rb, int count, MPI_Datatype t, MPI_Op op, MPI_Comm c) {
  g_bytes += type_bytes(t, count);
  TIMED(PMPI_Allreduce(sb, rb, count, t, op, c));
}

int MPI_Alltoall(const void* sb, int sc, MPI_Datatype st, void* rb, int rc, MPI_Datatype rt, MPI_Comm c) {
  g_bytes += type_bytes(st, sc) * (comm_size(c) - 1);
  TIMED(PMPI_Alltoall(sb, sc, st, rb, rc, rt, c));
}

int MPI_Alltoallv(const void* sb, const int sc[], const int sd[], MPI_Datatype st, void* rb, const int rc[],
                  const int rd[], MPI_Datatype rt, MPI_Comm c) {
  int me = 0, n = comm_size(c);
  PMPI_Comm_rank(c, &me);
  double sent = 0;
  for (int p = 0; p < n; ++p)
    if (p != me) sent += sc[p];
  g_bytes += type_bytes(st, sent);
  TIMED(PMPI_Alltoallv(sb, sc, sd, st, rb, rc, rd, rt, c));
}

int MPI_Bcast(void* b, int count, MPI_Datatype t, int root, MPI_Comm c) {
  g_bytes += type_bytes(t, count);
  if (g_mark_bytes >= 0 && type_bytes(t, count) == (double)g_mark_bytes && g_marks < kMaxMarks) {
    g_mark_t[g_marks] = now_s();
    g_mark_comm[g_marks] = g_comm;
    g_mark_cpu[g_marks] = cpu_seconds();
    ++g_marks;
  }
  TIMED(PMPI_Bcast(b, count, t, root, c));
}

int MPI_Barrier(MPI_Comm c) { TIMED(PMPI_Barrier(c)); }

int MPI_Send(const void* b, int count, MPI_Datatype t, int dest, int tag, MPI_Comm c) {
  g_bytes += type_bytes(t, count);
  TIMED(PMPI_Send(b, count, t, dest, tag, c));
}

int MPI_Recv(void* b, int count, MPI_Datatype t, int src, int tag, MPI_Comm c, MPI_Status* s) {
  TIMED(PMPI_Recv(b, count, t, src, tag, c, s));
}

int MPI_Reduce_scatter_block(const void* sb, void* rb, int count, MPI_Datatype t, MPI_Op op, MPI_Comm c) {
  g_bytes += type_bytes(t, (double)count * (comm_size(c) - 1));
  TIMED(PMPI_Reduce_scatter_block(sb, rb, count, t, op, c));
}

static double cpu_seconds(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + 1e-6 * (double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_sec +
         1e-6 * (double)ru.ru_stime.tv_usec;
}

static long vmhwm_kib(void) {
  FILE* f = fopen("/proc/self/status", "r");
  if (!f) return -1;
  char line[256];
  long v = -1;
  while (fgets(line, sizeof(line), f))
    if (strncmp(line, "VmHWM:", 6) == 0) {
      sscanf(line + 6, "%ld", &v);
      break;
    }
  fclose(f);
  return v;
}

int MPI_Finalize(void) {
  int rank = 0, size = 1;
  PMPI_Comm_rank(MPI_COMM_WORLD, &rank);
  PMPI_Comm_size(MPI_COMM_WORLD, &size);
  const double cpu = cpu_seconds();
  /* One write per line: mpirun forwards the ranks' stderr as it arrives, and lines written in pieces by several
   * ranks at once would interleave. */
  size_t cap = 512 + (size_t)g_marks * 72, len = 0;
  char* buf = (char*)malloc(cap);
  if (!buf) return PMPI_Finalize();
  len += (size_t)snprintf(buf + len, cap - len,
                          "[mpi_time] rank=%d size=%d wall_s=%.6f comm_s=%.6f calls=%lld bytes=%.0f vmhwm_kib=%ld "
                          "cpu_s=%.3f\n",
                          rank, size, now_s() - g_start, g_comm, g_calls, g_bytes, vmhwm_kib(), cpu);
  if (g_marks > 0) {
    len += (size_t)snprintf(buf + len, cap - len, "[mpi_time_marks] rank=%d t=", rank);
    for (int i = 0; i < g_marks; ++i)
      len += (size_t)snprintf(buf + len, cap - len, "%s%.6f", i ? "," : "", g_mark_t[i]);
    len += (size_t)snprintf(buf + len, cap - len, " comm=");
    for (int i = 0; i < g_marks; ++i)
      len += (size_t)snprintf(buf + len, cap - len, "%s%.6f", i ? "," : "", g_mark_comm[i]);
    len += (size_t)snprintf(buf + len, cap - len, " cpu=");
    for (int i = 0; i < g_marks; ++i)
      len += (size_t)snprintf(buf + len, cap - len, "%s%.3f", i ? "," : "", g_mark_cpu[i]);
    len += (size_t)snprintf(buf + len, cap - len, "\n");
  }
  if (write(2, buf, len) < 0) perror("mpi_time");
  free(buf);
  return PMPI_Finalize();
}
