// Per-rank weight bytes read at load (issue 4, "Performance"): for a checkpoint and a list of layouts, runs
// load_shard for every rank in turn (each rank opens the checkpoint itself, as a real rank does) and prints
// layout, rank, bytes read, bytes planned, the even share (checkpoint bytes / owners: sum over tensors of
// bytes / k, k = tp for TP- and vocabulary-split tensors, ep for routed experts, 1 for replicated ones), their
// ratio and the load time. Target: every rank within 5% of its even share.
//
// --cold drops the checkpoint files from the page cache before each rank's load (posix_fadvise DONTNEED; works
// for unprivileged users on clean pages), so the time includes reading from storage; the "disk" column is then
// the storage bytes the process read during load_shard (/proc/self/io read_bytes), which shows that the
// untouched ranges stay on disk, and during Checkpoint::open (the headers, plus the read-ahead the kernel adds
// to the header reads: up to read_ahead_kb of the first tensors of each file).
//
//   shard_load_bench --checkpoint DIR [--layout TP,EP,DP]... [--cold]
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "parallel/mesh.h"
#include "runtime/checkpoint/checkpoint.h"
#include "runtime/core/error.h"
#include "runtime/model/model_parallel.h"
#include "runtime/model/shard_load.h"

namespace fs = std::filesystem;
using namespace dsv4;

namespace {

struct Layout {
  int tp = 1, ep = 1, dp = 1;
};

Layout parse_layout(const std::string& text) {
  Layout l;
  DSV4_CHECK_ARG(std::sscanf(text.c_str(), "%d,%d,%d", &l.tp, &l.ep, &l.dp) == 3)
      << "--layout " << text << ": expected TP,EP,DP (e.g. 2,4,2)";
  return l;
}

void drop_page_cache(const fs::path& dir) {
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().extension() != ".safetensors") continue;
    const int fd = ::open(entry.path().c_str(), O_RDONLY);
    if (fd < 0) continue;
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::close(fd);
  }
}

// Bytes this process has caused to be fetched from storage (-1 when /proc/self/io is unreadable).
long long storage_read_bytes() {
  std::ifstream io("/proc/self/io");
  std::string key;
  long long value = 0;
  while (io >> key >> value) {
    if (key == "read_bytes:") return value;
  }
  return -1;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    fs::path dir;
    std::vector<Layout> layouts;
    bool cold = false;
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      if (a == "--checkpoint" && i + 1 < argc) {
        dir = argv[++i];
      } else if (a == "--layout" && i + 1 < argc) {
        layouts.push_back(parse_layout(argv[++i]));
      } else if (a == "--cold") {
        cold = true;
      } else {
        std::fprintf(stderr, "usage: shard_load_bench --checkpoint DIR [--layout TP,EP,DP]... [--cold]\n");
        return 2;
      }
    }
    DSV4_CHECK_ARG(!dir.empty()) << "--checkpoint DIR is required";
    if (layouts.empty()) layouts = {{1, 1, 1}, {1, 2, 2}, {1, 4, 4}, {1, 8, 8}};

    const ModelConfig config = Checkpoint::open(dir).config();
    std::printf("checkpoint %s%s\n", dir.c_str(), cold ? " (page cache dropped before each rank)" : "");
    std::printf("%-30s %4s %13s %13s %15s %7s %8s %s\n", "layout", "rank", "bytes read", "planned",
                "ckpt/owners", "ratio", "seconds", cold ? "   disk(load)    disk(open)" : "");
    double worst = 0.0;
    for (const Layout& l : layouts) {
      parallel::MeshConfig mc;
      mc.tp = l.tp;
      mc.ep = l.ep;
      mc.dp = l.dp;
      mc.world_size = l.tp * l.dp;
      const parallel::Mesh mesh = parallel::Mesh::create(mc, mesh_dims(config));
      const parallel::ShardPlan plan = model_shard_plan(config, mesh);
      const double share = even_share_bytes(plan);
      for (int r = 0; r < mesh.world_size(); ++r) {
        if (cold) drop_page_cache(dir);
        const long long io_open = storage_read_bytes();
        const Checkpoint ck = Checkpoint::open(dir);
        const long long io0 = storage_read_bytes();
        ShardLoadReport rep;
        const ModelWeights w = load_shard(ck, model_shard_for_rank(config, mesh, r), &rep);
        const long long io1 = storage_read_bytes();
        const double ratio = static_cast<double>(rep.bytes_read) / share;
        worst = std::max(worst, std::abs(ratio - 1.0));
        char disk[64] = "";
        if (cold && io0 >= 0) std::snprintf(disk, sizeof(disk), "%13lld %13lld", io1 - io0, io0 - io_open);
        std::printf("%-30s %4d %13llu %13llu %15.0f %7.4f %8.3f %s\n", mesh.str().c_str(), r,
                    static_cast<unsigned long long>(rep.bytes_read),
                    static_cast<unsigned long long>(rep.bytes_planned), share, ratio, rep.seconds, disk);
        DSV4_CHECK(rep.bytes_read == rep.bytes_planned) << "rank " << r << " read other bytes than planned";
      }
    }
    std::printf("checkpoint bytes %llu; worst |read / (ckpt/owners) - 1| = %.4f (target <= 0.05)\n",
                static_cast<unsigned long long>(Checkpoint::open(dir).total_bytes()), worst);
    return worst <= 0.05 ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "shard_load_bench: %s\n", e.what());
    return 1;
  }
}
