// The SIMT emulator's runtime: the fake CUDA runtime API, the fiber scheduler, warp collectives and
// the checkers (kernels/simt/simt_cpu.h describes what is emulated and how to build).
// Never compile this file with -fsanitize=thread: it provides the __tsan_* hooks of the race build.
#include "simt_cpu.h"

#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cxxabi.h>
#include <deque>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define SIMT_ASAN 1
#else
#define SIMT_ASAN 0
#endif

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

namespace simt {

Thread *g_cur = nullptr;
uint3 g_block_idx;
dim3 g_block_dim;
dim3 g_grid_dim;
unsigned char *g_dynamic_shared = nullptr;

namespace {

// ---------------------------------------------------------------- errors

std::mutex g_state_mutex;       // the sticky error, the report, the allocation map
cudaError_t g_sticky = cudaSuccess;
std::string g_report;           // the last failed launch's report
thread_local cudaError_t g_last = cudaSuccess;
unsigned long long g_launches = 0;

cudaError_t set_last(cudaError_t e)
{
    if (e != cudaSuccess) g_last = e;
    return e;
}

std::map<uintptr_t, size_t> g_allocs; // device allocations: start -> size

bool is_device(const void *p, size_t n)
{
    const uintptr_t a = (uintptr_t)p;
    auto it = g_allocs.upper_bound(a);
    if (it == g_allocs.begin()) return false;
    --it;
    return a >= it->first && a - it->first <= it->second && n <= it->second - (a - it->first) &&
           (n > 0 || a < it->first + it->second || it->second == 0);
}

// ---------------------------------------------------------------- fibers

const size_t kStack = 256 * 1024;
const size_t kGuard = 4096;

enum State { READY, AT_BARRIER, AT_WARP, EXITED, FAILED };

struct Fiber : Thread {
    State state;
    char *stack; // kStack bytes above a guard page
    void *sp;
#if !defined(__x86_64__)
    ucontext_t uc;
#endif
    void *fake_stack;
    // at a barrier
    const char *file;
    int line;
    int bar_kind; // -1 plain, 0 count, 1 and, 2 or
    int pred;
    int *bar_out;
    // at a warp collective
    Collective kind;
    unsigned mask;
    const void *in;
    void *out;
    size_t size;
    int arg, width;
};

std::mutex g_launch_mutex; // one launch at a time, process-wide
std::vector<char *> g_stacks;
std::vector<Fiber> g_f;
int g_n = 0;            // threads per block
void *g_sched_sp = nullptr;
#if !defined(__x86_64__)
ucontext_t g_sched_uc;
#endif
#if SIMT_ASAN
const void *g_sched_stack_bottom = nullptr;
size_t g_sched_stack_size = 0;
void *g_sched_fake = nullptr;
#endif
void (*g_body)(void *) = nullptr;
void *g_body_ctx = nullptr;
bool g_failed = false;
std::string g_fail; // this launch's failure
const char *g_kernel = "";             // the kernel as written at the launch
const void *g_kernel_fn = nullptr;
std::string kernel_label();           // its name for the reports
const char *g_last_bar_file = nullptr; // the barrier that opened the current interval
int g_last_bar_line = 0;

enum Order { FORWARD, REVERSE, RANDOM };
Order g_order = FORWARD;
unsigned long long g_seed = 0;
bool g_schedule_read = false;

} // namespace
} // namespace simt

extern "C" void ccomp_simt_switch(void **save, void *to);
extern "C" void ccomp_simt_fiber_start(void);

#if defined(__x86_64__)
// Saves the callee-saved registers, MXCSR and the x87 control word on the current stack, stores the
// stack pointer in *save and resumes the context saved at `to`.
asm(R"(
    .text
    .globl ccomp_simt_switch
    .hidden ccomp_simt_switch
    .type ccomp_simt_switch,@function
ccomp_simt_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size ccomp_simt_switch,.-ccomp_simt_switch

    .globl ccomp_simt_fiber_start
    .hidden ccomp_simt_fiber_start
    .type ccomp_simt_fiber_start,@function
ccomp_simt_fiber_start:
    movq %r12, %rdi
    callq *%r13
    ud2
    .size ccomp_simt_fiber_start,.-ccomp_simt_fiber_start
)");
#endif

namespace simt {
namespace {

void fiber_main(Fiber *t);

void fiber_entry(void *arg)
{
    Fiber *t = static_cast<Fiber *>(arg);
#if SIMT_ASAN
    __sanitizer_finish_switch_fiber(nullptr, &g_sched_stack_bottom, &g_sched_stack_size);
#endif
    fiber_main(t);
}

#if !defined(__x86_64__)
void fiber_entry_uc(unsigned hi, unsigned lo)
{
    fiber_entry((void *)(((uintptr_t)hi << 32) | (uintptr_t)lo));
}
#endif

char *new_stack()
{
    void *m = mmap(nullptr, kStack + kGuard, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) return nullptr;
    mprotect(m, kGuard, PROT_NONE); // a stack overflow faults instead of corrupting the next stack
    return (char *)m + kGuard;
}

void init_fiber(Fiber &t)
{
#if SIMT_ASAN
    __asan_unpoison_memory_region(t.stack, kStack); // a previous fiber's frames left poison here
#endif
#if defined(__x86_64__)
    uintptr_t top = ((uintptr_t)t.stack + kStack) & ~(uintptr_t)15;
    uint64_t *sp = (uint64_t *)(top - 80);
    // [mxcsr | x87 cw] r15 r14 r13 r12 rbx rbp ret: `ret` enters ccomp_simt_fiber_start with rsp = top - 16
    sp[0] = 0x1F80ull | (0x037Full << 32);
    sp[1] = 0;                                 // r15
    sp[2] = 0;                                 // r14
    sp[3] = (uint64_t)(uintptr_t)&fiber_entry; // r13
    sp[4] = (uint64_t)(uintptr_t)&t;           // r12
    sp[5] = 0;                                 // rbx
    sp[6] = 0;                                 // rbp
    sp[7] = (uint64_t)(uintptr_t)&ccomp_simt_fiber_start;
    t.sp = sp;
#else
    getcontext(&t.uc);
    t.uc.uc_stack.ss_sp = t.stack;
    t.uc.uc_stack.ss_size = kStack;
    t.uc.uc_link = nullptr;
    makecontext(&t.uc, (void (*)())fiber_entry_uc, 2, (unsigned)((uintptr_t)&t >> 32), (unsigned)(uintptr_t)&t);
#endif
    t.fake_stack = nullptr;
}

// Scheduler -> fiber t; returns when t blocks, exits or fails.
void resume(Fiber &t)
{
    g_cur = &t;
#if SIMT_ASAN
    __sanitizer_start_switch_fiber(&g_sched_fake, t.stack, kStack);
#endif
#if defined(__x86_64__)
    ccomp_simt_switch(&g_sched_sp, t.sp);
#else
    swapcontext(&g_sched_uc, &t.uc);
#endif
#if SIMT_ASAN
    __sanitizer_finish_switch_fiber(g_sched_fake, nullptr, nullptr);
#endif
    g_cur = nullptr;
}

// Fiber -> scheduler (the fiber's state says why); returns when the scheduler resumes it.
void yield_to_scheduler(bool final)
{
    Fiber *t = static_cast<Fiber *>(g_cur);
#if SIMT_ASAN
    __sanitizer_start_switch_fiber(final ? nullptr : &t->fake_stack, g_sched_stack_bottom, g_sched_stack_size);
#else
    (void)final;
#endif
#if defined(__x86_64__)
    ccomp_simt_switch(&t->sp, g_sched_sp);
#else
    swapcontext(&t->uc, &g_sched_uc);
#endif
#if SIMT_ASAN
    __sanitizer_finish_switch_fiber(t->fake_stack, &g_sched_stack_bottom, &g_sched_stack_size);
#endif
}

// ---------------------------------------------------------------- reports

std::string fmt(const char *f, va_list ap)
{
    char buf[1024];
    vsnprintf(buf, sizeof buf, f, ap);
    return buf;
}

std::string strf(const char *f, ...) __attribute__((format(printf, 1, 2)));
std::string strf(const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    std::string s = fmt(f, ap);
    va_end(ap);
    return s;
}

// "0-31,40,64-95"
std::string thread_list(const std::vector<int> &ids)
{
    std::string s;
    for (size_t i = 0; i < ids.size();) {
        size_t j = i;
        while (j + 1 < ids.size() && ids[j + 1] == ids[j] + 1) j++;
        if (!s.empty()) s += ",";
        s += j > i ? strf("%d-%d", ids[i], ids[j]) : strf("%d", ids[i]);
        if (s.size() > 200) {
            s += ",...";
            break;
        }
        i = j + 1;
    }
    return s;
}

std::string site(const char *file, int line)
{
    if (file == nullptr) return "the start of the block";
    const char *slash = strrchr(file, '/');
    return strf("%s:%d", slash ? slash + 1 : file, line);
}

// Marks this launch failed (the first failure is the one reported).
void fail(const std::string &what)
{
    if (g_failed) return;
    g_failed = true;
    g_fail = strf("simt: kernel %s, block (%u,%u,%u) of (%u,%u,%u), %u threads: ", kernel_label().c_str(),
                  g_block_idx.x, g_block_idx.y, g_block_idx.z, g_grid_dim.x, g_grid_dim.y, g_grid_dim.z,
                  g_block_dim.x * g_block_dim.y * g_block_dim.z) +
             what;
    const char *ab = getenv("CCOMP_SIMT_ABORT");
    if (ab != nullptr && ab[0] == '1') {
        fprintf(stderr, "%s\n", g_fail.c_str());
        abort();
    }
}

const char *collective_name(Collective k)
{
    switch (k) {
    case SYNCWARP: return "__syncwarp";
    case SHFL_IDX: return "__shfl_sync";
    case SHFL_UP: return "__shfl_up_sync";
    case SHFL_DOWN: return "__shfl_down_sync";
    case SHFL_XOR: return "__shfl_xor_sync";
    case BALLOT: return "__ballot_sync";
    case ANY: return "__any_sync";
    case ALL: return "__all_sync";
    case REDUCE_OR: return "__reduce_or_sync";
    case REDUCE_AND: return "__reduce_and_sync";
    case REDUCE_XOR: return "__reduce_xor_sync";
    case REDUCE_ADD: return "__reduce_add_sync";
    case REDUCE_MIN:
    case REDUCE_MIN_S: return "__reduce_min_sync";
    case REDUCE_MAX:
    case REDUCE_MAX_S: return "__reduce_max_sync";
    case MMA_M16N8K16_F32_F16: return "mma.sync.m16n8k16";
    }
    return "?";
}

const char *barrier_name(int kind)
{
    return kind < 0 ? "__syncthreads" : kind == 0 ? "__syncthreads_count" : kind == 1 ? "__syncthreads_and" : "__syncthreads_or";
}

std::string wait_desc(const Fiber &t)
{
    if (t.state == AT_BARRIER) return strf("%s at %s", barrier_name(t.bar_kind), site(t.file, t.line).c_str());
    return strf("%s at %s (mask 0x%08x)", collective_name(t.kind), site(t.file, t.line).c_str(), t.mask);
}

// ---------------------------------------------------------------- race shadow (race build only)

struct Shadow {
    uint32_t w_epoch, w_wep, r_epoch, r_wep;
    uint16_t w_tid, r_tid;
    uint8_t w_write, r_many, r_mixed;
    uint8_t written; // static storage only: a kernel has written this byte (it is refilled before each block)
};

uint32_t g_epoch = 1;        // barrier intervals, unique across blocks and launches
uint32_t g_wcounter = 1;     // warp intervals, unique likewise
uint32_t g_wepoch[32];       // the current interval of each warp of the block
std::vector<Shadow> g_dyn_shadow;
size_t g_dyn_size = 0;
bool g_race_active = false;
bool g_race_build = false; // set by __tsan_init, which the instrumented objects' constructors call

// A symbol of a module's ELF symbol table (.symtab), for the reports.
struct Symbol {
    uintptr_t addr;
    size_t size;
    std::string name; // demangled, short_name
};

// The static storage of a module that holds kernels: its writable segments (.data, .bss; the RELRO part,
// read-only after relocation, left out). Kernel code writes no static storage but its __shared__ variables
// (the emulator compiles them as function-local statics, wherever the compiler places them: COMDAT
// sections for template kernels), so every access a fiber makes there is checked as shared memory; the
// runtime's own variables there (g_cur ...) are only read by kernel code, and reads alone never race.
struct StaticRange {
    char *begin, *end;
    Shadow *shadow;              // one per byte, mapped on demand (zero: never accessed)
    std::vector<size_t> written; // the offsets kernels wrote, refilled with junk before every block
    size_t module;               // index in g_modules
};

struct Module {
    uintptr_t bias;                  // the load address that the file's addresses are relative to
    std::string file;                // "" for the main program
    std::vector<std::pair<uintptr_t, uintptr_t>> loaded; // its loaded segments
    bool symbols_read = false;
    std::vector<Symbol> symbols;     // sorted by address; functions and objects
};

std::deque<Module> g_modules; // stable addresses
std::vector<StaticRange> g_static;

} // namespace
} // namespace simt

namespace simt {
namespace {

// A demangled name as the reports give it: "void (anonymous namespace)::f<1, float>(Args, float const*)::Bs"
// -> "f<1, float>::Bs" (no return type, parameter lists or anonymous namespace; the 256-byte error message of
// the bindings has room for little more).
std::string short_name(std::string d)
{
    for (size_t at; (at = d.find("(anonymous namespace)::")) != std::string::npos;) d.erase(at, 23);
    std::string out;
    int angle = 0;
    for (size_t i = 0; i < d.size(); i++) {
        const char c = d[i];
        if (c == '(' && i > 0 && (isalnum((unsigned char)d[i - 1]) || d[i - 1] == '_' || d[i - 1] == '>')) {
            for (int depth = 0; i < d.size(); i++) // a parameter list: skipped
                if (d[i] == '(') depth++;
                else if (d[i] == ')' && --depth == 0) break;
            continue;
        }
        if (c == '<') angle++;
        else if (c == '>') angle--;
        if (c == ' ' && angle == 0) out.clear(); // what came before was the return type
        else out += c;
    }
    return out;
}

// The module's symbol table, read from its file (once, for the reports; empty when stripped).
const std::vector<Symbol> &module_symbols(Module &m)
{
    if (m.symbols_read) return m.symbols;
    m.symbols_read = true;
    const std::string path = m.file.empty() ? "/proc/self/exe" : m.file;
    const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return m.symbols;
    struct stat st;
    void *map = MAP_FAILED;
    if (fstat(fd, &st) == 0 && st.st_size > 0) map = mmap(nullptr, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) return m.symbols;
    const char *img = static_cast<const char *>(map);
    const size_t size = (size_t)st.st_size;
    const ElfW(Ehdr) *eh = reinterpret_cast<const ElfW(Ehdr) *>(img);
    if (size >= sizeof *eh && memcmp(eh->e_ident, ELFMAG, SELFMAG) == 0 && eh->e_shentsize == sizeof(ElfW(Shdr)) &&
        eh->e_shoff + (size_t)eh->e_shnum * sizeof(ElfW(Shdr)) <= size) {
        const ElfW(Shdr) *sh = reinterpret_cast<const ElfW(Shdr) *>(img + eh->e_shoff);
        for (unsigned i = 0; i < eh->e_shnum; i++) {
            if (sh[i].sh_type != SHT_SYMTAB || sh[i].sh_link >= eh->e_shnum) continue;
            const ElfW(Shdr) &strs = sh[sh[i].sh_link];
            if (sh[i].sh_offset + sh[i].sh_size > size || strs.sh_offset + strs.sh_size > size) continue;
            const ElfW(Sym) *sym = reinterpret_cast<const ElfW(Sym) *>(img + sh[i].sh_offset);
            for (size_t k = 0; k < sh[i].sh_size / sizeof(ElfW(Sym)); k++) {
                const int type = ELF64_ST_TYPE(sym[k].st_info); // the same bits in ELF32_ST_TYPE
                if ((type != STT_OBJECT && type != STT_FUNC) || sym[k].st_size == 0 || sym[k].st_name >= strs.sh_size)
                    continue;
                const char *name = img + strs.sh_offset + sym[k].st_name;
                int ok = 0;
                char *d = abi::__cxa_demangle(name, nullptr, nullptr, &ok);
                const std::string full = ok == 0 && d ? d : name;
                m.symbols.push_back({m.bias + (uintptr_t)sym[k].st_value, (size_t)sym[k].st_size, short_name(full)});
                free(d);
            }
        }
    }
    munmap(map, size);
    std::sort(m.symbols.begin(), m.symbols.end(), [](const Symbol &a, const Symbol &b) { return a.addr < b.addr; });
    return m.symbols;
}

// The symbol whose object or function holds addr in module m, or nullptr.
const Symbol *symbol_at(Module &m, uintptr_t addr)
{
    const std::vector<Symbol> &syms = module_symbols(m);
    auto it = std::upper_bound(syms.begin(), syms.end(), addr, [](uintptr_t a, const Symbol &s) { return a < s.addr; });
    while (it != syms.begin()) { // symbols may nest (aliases): the nearest one below that holds addr
        --it;
        if (addr - it->addr < it->size) return &*it;
        if (addr - it->addr > (1u << 24)) break;
    }
    return nullptr;
}

struct ModuleSearch {
    uintptr_t addr;
    Module *found;
};

// dl_iterate_phdr callback: records the module that holds the address (its static storage in the race build).
int add_module(struct dl_phdr_info *info, size_t, void *data)
{
    ModuleSearch &q = *static_cast<ModuleSearch *>(data);
    uintptr_t relro_lo = 0, relro_hi = 0;
    bool holds = false;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) &ph = info->dlpi_phdr[i];
        const uintptr_t lo = info->dlpi_addr + ph.p_vaddr;
        if (ph.p_type == PT_LOAD && q.addr >= lo && q.addr - lo < ph.p_memsz) holds = true;
        if (ph.p_type == PT_GNU_RELRO) {
            relro_lo = lo;
            relro_hi = lo + ph.p_memsz;
        }
    }
    if (!holds) return 0;
    const size_t index = g_modules.size();
    g_modules.push_back(Module());
    Module &m = g_modules.back();
    m.bias = info->dlpi_addr;
    m.file = info->dlpi_name ? info->dlpi_name : "";
    auto add = [&](uintptr_t a, uintptr_t b) {
        if (a >= b || !g_race_build) return;
        void *sh = mmap(nullptr, (b - a) * sizeof(Shadow), PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (sh != MAP_FAILED) g_static.push_back({(char *)a, (char *)b, static_cast<Shadow *>(sh), {}, index});
    };
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) &ph = info->dlpi_phdr[i];
        if (ph.p_type != PT_LOAD) continue;
        const uintptr_t lo = info->dlpi_addr + ph.p_vaddr, hi = lo + ph.p_memsz;
        m.loaded.push_back({lo, hi});
        if (!(ph.p_flags & PF_W)) continue;
        if (relro_hi <= lo || relro_lo >= hi) {
            add(lo, hi);
        } else {
            add(lo, relro_lo);
            add(relro_hi, hi);
        }
    }
    q.found = &m;
    return 1;
}

// The module that holds the code or data at addr (registered at its first use; nullptr if none does).
Module *module_of(const void *addr)
{
    const uintptr_t a = (uintptr_t)addr;
    for (Module &m : g_modules)
        for (const auto &seg : m.loaded)
            if (a >= seg.first && a < seg.second) return &m;
    ModuleSearch q{a, nullptr};
    dl_iterate_phdr(add_module, &q);
    return q.found;
}

std::string kernel_label()
{
    Dl_info info;
    const char *name = nullptr;
    if (dladdr(g_kernel_fn, &info) != 0 && info.dli_sname != nullptr && info.dli_saddr == g_kernel_fn)
        name = info.dli_sname;
    if (name != nullptr) {
        int st = 0;
        char *d = abi::__cxa_demangle(name, nullptr, nullptr, &st);
        std::string s = short_name(st == 0 && d ? d : name);
        free(d);
        return s;
    }
    // hidden kernels (the extension's): the module's symbol table names the instance
    Module *m = module_of(g_kernel_fn);
    const Symbol *sym = m ? symbol_at(*m, (uintptr_t)g_kernel_fn) : nullptr;
    return sym != nullptr && sym->addr == (uintptr_t)g_kernel_fn ? sym->name : std::string(g_kernel);
}

bool conflict(const Fiber &t, unsigned u, uint32_t epoch, uint32_t wep)
{
    const unsigned w = (unsigned)t.linear >> 5;
    return epoch == g_epoch && u != (unsigned)t.linear && ((u >> 5) != w || wep == g_wepoch[w]);
}

void race(const Fiber &t, bool is_write, unsigned other, bool other_write, const std::string &where)
{
    fail(strf("shared-memory race on %s: %s by thread %u and %s by thread %d with no barrier between "
              "(interval after %s)",
              where.c_str(), other_write ? "write" : "read", other, is_write ? "write" : "read", t.linear,
              g_last_bar_file ? ("__syncthreads at " + site(g_last_bar_file, g_last_bar_line)).c_str()
                              : "the start of the block"));
}

// "static __shared__ `Bs` byte 12" (a variable of the kernel), "`helper<float>::tile`" (of a function it calls), or
// the address in the module when it has no symbol table.
std::string static_where(const StaticRange &r, const char *p)
{
    Module &m = g_modules[r.module];
    const Symbol *s = symbol_at(m, (uintptr_t)p);
    if (s != nullptr) {
        const std::string kernel = kernel_label() + "::";
        const bool own = s->name.compare(0, kernel.size(), kernel) == 0;
        const std::string name = own ? s->name.substr(kernel.size()) : s->name;
        return strf("static __shared__ `%s` byte %zu", name.c_str(), (size_t)((uintptr_t)p - s->addr));
    }
    const char *slash = strrchr(m.file.c_str(), '/');
    const char *file = m.file.empty() ? "the program" : slash ? slash + 1 : m.file.c_str();
    return strf("static __shared__ storage at %s+0x%zx", file, (size_t)((uintptr_t)p - m.bias));
}

void shared_access(const void *addr, size_t n, bool is_write)
{
    if (!g_race_active || g_cur == nullptr || g_failed) return;
    const Fiber &t = *static_cast<const Fiber *>(g_cur);
    // only the running fiber's accesses: another host thread running instrumented host code meanwhile is not
    // kernel code (g_cur is the launching thread's)
    const char *sp = (const char *)__builtin_frame_address(0);
    if (sp < t.stack || sp >= t.stack + kStack) return;
    const char *p = (const char *)addr;
    Shadow *sh;
    StaticRange *range = nullptr;
    size_t off;
    const char *arena = (const char *)g_dynamic_shared;
    if (arena != nullptr && p >= arena && p < arena + g_dyn_size) {
        off = (size_t)(p - arena);
        sh = g_dyn_shadow.data() + off;
        n = std::min(n, g_dyn_size - off);
    } else {
        for (StaticRange &r : g_static)
            if (p >= r.begin && p < r.end) {
                range = &r;
                break;
            }
        if (range == nullptr) return; // a fiber's stack, device memory, read-only data
        off = (size_t)(p - range->begin);
        sh = range->shadow + off;
        n = std::min(n, (size_t)(range->end - p));
    }
    const unsigned w = (unsigned)t.linear >> 5;
    for (size_t i = 0; i < n; i++) {
        Shadow &s = sh[i];
        unsigned other = 0;
        bool other_write = false, hit = false;
        if (conflict(t, s.w_tid, s.w_epoch, s.w_wep)) {
            other = s.w_tid;
            other_write = hit = true;
        } else if (is_write && s.r_epoch == g_epoch) {
            if (!s.r_many) hit = conflict(t, s.r_tid, s.r_epoch, s.r_wep);
            else hit = s.r_mixed || (unsigned)(s.r_tid >> 5) != w || s.r_wep == g_wepoch[w];
            other = s.r_tid;
        }
        if (hit) {
            return race(t, is_write, other, other_write,
                        range ? static_where(*range, p + i) : strf("dynamic shared memory byte %zu", off + i));
        }
        if (is_write) {
            s.w_epoch = g_epoch;
            s.w_wep = g_wepoch[w];
            s.w_tid = (uint16_t)t.linear;
            s.r_epoch = 0;
            if (range != nullptr && !s.written) {
                s.written = 1;
                range->written.push_back(off + i);
            }
        } else if (s.r_epoch != g_epoch) {
            s.r_epoch = g_epoch;
            s.r_wep = g_wepoch[w];
            s.r_tid = (uint16_t)t.linear;
            s.r_many = s.r_mixed = 0;
        } else {
            if (s.r_tid != (unsigned)t.linear) {
                s.r_many = 1;
                if ((unsigned)(s.r_tid >> 5) != w) s.r_mixed = 1;
                s.r_tid = (uint16_t)t.linear;
            }
            s.r_wep = g_wepoch[w];
        }
    }
}

// ---------------------------------------------------------------- warp collectives

inline float half_to_float(uint16_t h)
{
    const uint32_t sign = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 31, m = h & 1023;
    float f;
    if (e == 0) f = ldexpf((float)m, -24);
    else if (e == 31) f = m ? NAN : INFINITY;
    else f = ldexpf((float)(m | 1024), (int)e - 25);
    uint32_t bits;
    memcpy(&bits, &f, 4);
    bits |= sign;
    memcpy(&f, &bits, 4);
    return f;
}

// D = A B + C for m16n8k16 with the PTX ISA's fragment layout (groupID = lane >> 2,
// threadID_in_group = lane & 3): A row-major 16x16 in a[0..3] (f16 pairs), B column-major 16x8 in
// b[0..1], C/D 16x8 f32 in c[0..3]. The exact sum of the 16 products and C, rounded once to f32.
void mma_m16n8k16(Fiber *const lanes[32])
{
    float A[16][16], B[16][8], C[16][8];
    for (int l = 0; l < 32; l++) {
        const MmaIn &in = *static_cast<const MmaIn *>(lanes[l]->in);
        const int g = l >> 2, tg = l & 3;
        for (int i = 0; i < 8; i++) { // a_i: register i >> 1, half i & 1
            const uint16_t h = (uint16_t)(in.a[i >> 1] >> (16 * (i & 1)));
            const int row = g + ((i >> 1) & 1) * 8, col = tg * 2 + (i & 1) + (i >= 4 ? 8 : 0);
            A[row][col] = half_to_float(h);
        }
        for (int i = 0; i < 4; i++) { // b_i: register i >> 1
            const uint16_t h = (uint16_t)(in.b[i >> 1] >> (16 * (i & 1)));
            B[tg * 2 + (i & 1) + (i >= 2 ? 8 : 0)][g] = half_to_float(h);
        }
        for (int i = 0; i < 4; i++) C[g + (i >= 2 ? 8 : 0)][tg * 2 + (i & 1)] = in.c[i];
    }
    for (int l = 0; l < 32; l++) {
        float *d = static_cast<float *>(lanes[l]->out);
        const int g = l >> 2, tg = l & 3;
        for (int i = 0; i < 4; i++) {
            const int row = g + (i >= 2 ? 8 : 0), col = tg * 2 + (i & 1);
            double s = C[row][col];
            for (int k = 0; k < 16; k++) s += (double)A[row][k] * (double)B[k][col];
            d[i] = (float)s;
        }
    }
}

// The lanes of t's warp named by t's mask; nullptr for lanes that do not exist or have exited.
// Returns false when a named lane has not arrived yet; fails on a mismatch.
bool gather(Fiber &t, Fiber *lanes[32])
{
    const int base = t.linear & ~31;
    for (int l = 0; l < 32; l++) {
        lanes[l] = nullptr;
        if (!(t.mask >> l & 1u)) continue;
        const int id = base + l;
        if (id >= g_n) continue;
        Fiber &u = g_f[id];
        if (u.state == EXITED) continue;
        if (u.state != AT_WARP) return false;
        if (u.kind != t.kind || u.file != t.file || u.line != t.line || u.mask != t.mask) {
            fail(strf("warp collective mismatch: lane %d (thread %d) is at %s while lane %d (thread %d) is at %s", t.linear & 31,
                      t.linear, wait_desc(t).c_str(), l, id, wait_desc(u).c_str()));
            return false;
        }
        lanes[l] = &u;
    }
    return true;
}

// Completes t's collective if every lane it names has arrived (called by the arriving lane and by
// lanes that exit). Returns true if it completed.
bool try_complete(Fiber &t)
{
    Fiber *lanes[32];
    if (!gather(t, lanes)) return false;
    const int base = t.linear & ~31;
    auto source = [&](int l, int src) -> const void * {
        if (lanes[src] == nullptr) {
            fail(strf("%s at %s: lane %d (thread %d) reads lane %d, which is %s", collective_name(t.kind),
                      site(t.file, t.line).c_str(), l, base + l, src,
                      base + src >= g_n ? "outside the block" : !(t.mask >> src & 1u) ? "not in the mask" : "exited"));
            return nullptr;
        }
        return lanes[src]->in;
    };
    switch (t.kind) {
    case SYNCWARP: break;
    case SHFL_IDX:
    case SHFL_UP:
    case SHFL_DOWN:
    case SHFL_XOR: {
        const int w = t.width;
        if (w <= 0 || w > 32 || (w & (w - 1)) != 0) {
            fail(strf("%s at %s: width %d is not a power of two in [1, 32]", collective_name(t.kind), site(t.file, t.line).c_str(), w));
            return false;
        }
        for (int l = 0; l < 32; l++) {
            if (lanes[l] == nullptr) continue;
            const int seg = l & ~(w - 1), a = lanes[l]->arg;
            int src;
            if (t.kind == SHFL_IDX) src = seg + (a & (w - 1));
            else if (t.kind == SHFL_UP) src = (l - seg) >= a ? l - a : l;
            else if (t.kind == SHFL_DOWN) src = (l - seg) + a < w ? l + a : l;
            else src = ((l ^ a) & 31) < seg + w ? (l ^ a) & 31 : l;
            const void *p = source(l, src);
            if (p == nullptr) return false;
            memcpy(lanes[l]->out, p, t.size);
        }
        break;
    }
    case BALLOT:
    case ANY:
    case ALL: {
        unsigned ballot = 0, named = 0;
        for (int l = 0; l < 32; l++)
            if (lanes[l] != nullptr) {
                named |= 1u << l;
                if (*static_cast<const unsigned *>(lanes[l]->in)) ballot |= 1u << l;
            }
        const unsigned r = t.kind == BALLOT ? ballot : t.kind == ANY ? ballot != 0 : ballot == named;
        for (int l = 0; l < 32; l++)
            if (lanes[l] != nullptr) *static_cast<unsigned *>(lanes[l]->out) = r;
        break;
    }
    case MMA_M16N8K16_F32_F16:
        for (int l = 0; l < 32; l++)
            if (lanes[l] == nullptr) {
                fail(strf("mma.sync at %s needs all 32 lanes of the warp; lane %d (thread %d) %s", site(t.file, t.line).c_str(), l,
                          base + l, base + l >= g_n ? "is outside the block" : "has exited or is not in the mask"));
                return false;
            }
        mma_m16n8k16(lanes);
        break;
    default: { // reductions of 32-bit values
        bool first = true;
        uint32_t acc = 0;
        for (int l = 0; l < 32; l++) {
            if (lanes[l] == nullptr) continue;
            uint32_t v;
            memcpy(&v, lanes[l]->in, 4);
            if (first) acc = v;
            else if (t.kind == REDUCE_OR) acc |= v;
            else if (t.kind == REDUCE_AND) acc &= v;
            else if (t.kind == REDUCE_XOR) acc ^= v;
            else if (t.kind == REDUCE_ADD) acc += v;
            else if (t.kind == REDUCE_MIN) acc = std::min(acc, v);
            else if (t.kind == REDUCE_MAX) acc = std::max(acc, v);
            else if (t.kind == REDUCE_MIN_S) acc = (uint32_t)std::min((int32_t)acc, (int32_t)v);
            else acc = (uint32_t)std::max((int32_t)acc, (int32_t)v);
            first = false;
        }
        for (int l = 0; l < 32; l++)
            if (lanes[l] != nullptr) memcpy(lanes[l]->out, &acc, 4);
    }
    }
    const unsigned w = (unsigned)t.linear >> 5;
    g_wepoch[w] = ++g_wcounter;
    for (int l = 0; l < 32; l++)
        if (lanes[l] != nullptr) lanes[l]->state = READY;
    return true;
}

// ---------------------------------------------------------------- the scheduler

void fiber_main(Fiber *t)
{
    g_body(g_body_ctx);
    t->state = EXITED;
    // lanes of the warp waiting for this one may now complete (exited lanes are not waited for)
    const int base = t->linear & ~31;
    for (int l = 0; l < 32 && !g_failed; l++) {
        const int id = base + l;
        if (id < g_n && g_f[id].state == AT_WARP && (g_f[id].mask >> (t->linear & 31) & 1u)) try_complete(g_f[id]);
    }
    yield_to_scheduler(true);
    abort(); // never resumed
}

void block_yield(Fiber &t)
{
    yield_to_scheduler(false);
    (void)t;
}

// Everyone alive is blocked: complete the barrier, or report why it cannot be completed.
void resolve_stall()
{
    std::vector<int> exited, at_bar;
    const Fiber *first = nullptr;
    bool same = true;
    for (int i = 0; i < g_n; i++) {
        const Fiber &t = g_f[i];
        if (t.state == EXITED) {
            exited.push_back(i);
            continue;
        }
        if (t.state == AT_BARRIER) at_bar.push_back(i);
        if (first == nullptr) first = &t;
        else if (t.state != first->state || t.file != first->file || t.line != first->line || t.bar_kind != first->bar_kind ||
                 (t.state == AT_WARP && (t.kind != first->kind || t.mask != first->mask)))
            same = false;
    }
    if (!same || first->state != AT_BARRIER) {
        // group the waiting threads by where they wait
        std::vector<std::pair<std::string, std::vector<int>>> groups;
        for (int i = 0; i < g_n; i++) {
            if (g_f[i].state == EXITED) continue;
            const std::string d = wait_desc(g_f[i]);
            auto it = std::find_if(groups.begin(), groups.end(), [&](const std::pair<std::string, std::vector<int>> &g) { return g.first == d; });
            if (it == groups.end()) groups.push_back({d, {i}});
            else it->second.push_back(i);
        }
        std::string s = at_bar.empty() ? "warp collectives that cannot complete (deadlock): "
                                       : "threads of the block wait at different synchronisation points: ";
        for (size_t k = 0; k < groups.size(); k++)
            s += (k ? "; " : "") + strf("threads %s wait at %s", thread_list(groups[k].second).c_str(), groups[k].first.c_str());
        if (!exited.empty()) s += "; threads " + thread_list(exited) + " have exited";
        return fail(s);
    }
    if (!exited.empty())
        return fail(strf("threads %s exited while threads %s wait at %s (every live thread of the block must reach it)",
                         thread_list(exited).c_str(), thread_list(at_bar).c_str(), wait_desc(*first).c_str()));
    if (first->bar_kind >= 0) {
        int count = 0;
        for (int i = 0; i < g_n; i++) count += g_f[i].pred != 0;
        const int r = first->bar_kind == 0 ? count : first->bar_kind == 1 ? count == g_n : count > 0;
        for (int i = 0; i < g_n; i++) *g_f[i].bar_out = r;
    }
    for (int i = 0; i < g_n; i++) g_f[i].state = READY;
    g_last_bar_file = first->file;
    g_last_bar_line = first->line;
    g_epoch++;
}

void read_schedule_env()
{
    if (g_schedule_read) return;
    g_schedule_read = true;
    const char *s = getenv("CCOMP_SIMT_SCHEDULE");
    if (s != nullptr && *s && ccomp_simt_set_schedule(s) != 0)
        fprintf(stderr, "simt: CCOMP_SIMT_SCHEDULE=%s not understood (forward, reverse or random:SEED); using forward\n", s);
}

unsigned char junk_byte()
{
    return g_order == FORWARD ? 0x5a : g_order == REVERSE ? 0xa5 : (unsigned char)(g_seed * 0x9e3779b97f4a7c15ull >> 56);
}

void run_block(std::vector<int> &order, std::mt19937_64 &rng)
{
    for (int i = 0; i < g_n; i++) {
        Fiber &t = g_f[i];
        t.state = READY;
        t.file = nullptr;
        init_fiber(t);
    }
    const unsigned char junk = g_order == RANDOM ? (unsigned char)rng() : junk_byte();
    if (g_dynamic_shared != nullptr && g_dyn_size > 0) memset(g_dynamic_shared, junk, g_dyn_size);
    if (g_race_active)
        for (StaticRange &r : g_static)
            for (size_t off : r.written) r.begin[off] = (char)junk;
    g_epoch++;
    g_last_bar_file = nullptr;
    for (int w = 0; w < 32; w++) g_wepoch[w] = ++g_wcounter;
    for (;;) {
        if (g_order == RANDOM) std::shuffle(order.begin(), order.end(), rng);
        bool ran = false, alive = false;
        for (int idx : order) {
            Fiber &t = g_f[idx];
            if (t.state == READY) {
                resume(t);
                ran = true;
                if (g_failed) return;
            }
        }
        for (int i = 0; i < g_n && !alive; i++) alive = g_f[i].state != EXITED;
        if (!alive) return;
        if (ran) continue;
        resolve_stall();
        if (g_failed) return;
    }
}

std::map<const void *, int> g_smem_optin;

} // namespace

void syncthreads(const char *file, int line)
{
    Fiber &t = *static_cast<Fiber *>(g_cur);
    t.state = AT_BARRIER;
    t.file = file;
    t.line = line;
    t.bar_kind = -1;
    block_yield(t);
}

int syncthreads_reduce(int kind, int pred, const char *file, int line)
{
    Fiber &t = *static_cast<Fiber *>(g_cur);
    int out = 0;
    t.state = AT_BARRIER;
    t.file = file;
    t.line = line;
    t.bar_kind = kind;
    t.pred = pred;
    t.bar_out = &out;
    block_yield(t);
    return out;
}

void warp_collective(Collective kind, unsigned mask, const void *in, void *out, size_t size, int arg, int width,
                     const char *file, int line)
{
    Fiber &t = *static_cast<Fiber *>(g_cur);
    t.state = AT_WARP;
    t.kind = kind;
    t.mask = mask;
    t.in = in;
    t.out = out;
    t.size = size;
    t.arg = arg;
    t.width = width;
    t.file = file;
    t.line = line;
    if (!(mask >> (t.linear & 31) & 1u))
        fail(strf("%s at %s: lane %d (thread %d) is not in its mask 0x%08x", collective_name(kind), site(file, line).c_str(),
                  t.linear & 31, t.linear, mask));
    else
        try_complete(t);
    if (g_failed) t.state = FAILED;
    while (t.state != READY) {
        block_yield(t);
    }
}

void fail_thread(const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    fail(fmt(f, ap));
    va_end(ap);
    static_cast<Fiber *>(g_cur)->state = FAILED;
    yield_to_scheduler(true);
    abort();
}

void run(const LaunchConfig &cfg, void (*body)(void *), void *ctx)
{
    const dim3 g = cfg.grid, b = cfg.block;
    const unsigned long long nthreads = (unsigned long long)b.x * b.y * b.z;
    if (b.x == 0 || b.y == 0 || b.z == 0 || b.x > 1024 || b.y > 1024 || b.z > 64 || nthreads > 1024 || g.x == 0 ||
        g.y == 0 || g.z == 0 || g.y > 65535 || g.z > 65535 || g.x > 0x7fffffffu) {
        set_last(cudaErrorInvalidConfiguration);
        return;
    }
    std::lock_guard<std::mutex> launch_lock(g_launch_mutex);
    {
        std::lock_guard<std::mutex> lk(g_state_mutex);
        if (g_sticky != cudaSuccess) return;
        if (cfg.shared_bytes > 48 * 1024) {
            auto it = g_smem_optin.find(cfg.kernel);
            if (cfg.shared_bytes > 232448 || it == g_smem_optin.end() || (size_t)it->second < cfg.shared_bytes) {
                set_last(cudaErrorInvalidValue);
                return;
            }
        }
        g_launches++;
    }
    read_schedule_env();
    while (g_stacks.size() < nthreads) {
        char *s = new_stack();
        if (s == nullptr) {
            set_last(cudaErrorLaunchOutOfResources);
            return;
        }
        g_stacks.push_back(s);
    }
    g_n = (int)nthreads;
    g_f.assign(g_n, Fiber());
    for (int i = 0; i < g_n; i++) {
        Fiber &t = g_f[i];
        t.stack = g_stacks[i];
        t.linear = i;
        t.thread_idx = make_uint3(i % b.x, i / b.x % b.y, i / (b.x * b.y));
    }
    g_body = body;
    g_body_ctx = ctx;
    g_failed = false;
    g_fail.clear();
    g_kernel = cfg.name;
    g_kernel_fn = cfg.kernel;
    g_block_dim = b;
    g_grid_dim = g;
    g_dyn_size = cfg.shared_bytes;
    unsigned char *arena = (unsigned char *)malloc(cfg.shared_bytes); // exact size: ASan sees overruns
    if (arena == nullptr && cfg.shared_bytes > 0) {
        set_last(cudaErrorLaunchOutOfResources);
        return;
    }
    g_dynamic_shared = arena;
    g_race_active = g_race_build;
    if (g_race_active) {
        module_of(cfg.kernel); // from the first launch on, its module's static storage is tracked
        g_dyn_shadow.assign(cfg.shared_bytes, Shadow());
    }
    std::vector<int> order(g_n);
    for (int i = 0; i < g_n; i++) order[i] = g_order == REVERSE ? g_n - 1 - i : i;
    std::mt19937_64 rng(g_seed);
    for (unsigned z = 0; z < g.z && !g_failed; z++)
        for (unsigned y = 0; y < g.y && !g_failed; y++)
            for (unsigned x = 0; x < g.x && !g_failed; x++) {
                g_block_idx = make_uint3(x, y, z);
                run_block(order, rng);
            }
    g_race_active = false;
    g_dynamic_shared = nullptr;
    free(arena);
    g_dyn_shadow.clear();
    if (g_failed) {
        std::lock_guard<std::mutex> lk(g_state_mutex);
        g_sticky = cudaErrorLaunchFailure;
        g_report = g_fail;
    }
}

} // namespace simt

// ---------------------------------------------------------------- race-build hooks
// GCC's -fsanitize=thread calls these before loads and stores of the instrumented .cu files.

extern "C" {
#define SIMT_HOOKS(n)                                                                   \
    void __tsan_read##n(void *p) { simt::shared_access(p, n, false); }                  \
    void __tsan_write##n(void *p) { simt::shared_access(p, n, true); }                  \
    void __tsan_unaligned_read##n(void *p) { simt::shared_access(p, n, false); }        \
    void __tsan_unaligned_write##n(void *p) { simt::shared_access(p, n, true); }        \
    void __tsan_volatile_read##n(void *p) { simt::shared_access(p, n, false); }         \
    void __tsan_volatile_write##n(void *p) { simt::shared_access(p, n, true); }         \
    void __tsan_unaligned_volatile_read##n(void *p) { simt::shared_access(p, n, false); } \
    void __tsan_unaligned_volatile_write##n(void *p) { simt::shared_access(p, n, true); }
SIMT_HOOKS(1)
SIMT_HOOKS(2)
SIMT_HOOKS(4)
SIMT_HOOKS(8)
SIMT_HOOKS(16)
#undef SIMT_HOOKS
void __tsan_read_range(void *p, unsigned long n) { simt::shared_access(p, n, false); }
void __tsan_write_range(void *p, unsigned long n) { simt::shared_access(p, n, true); }
void __tsan_init(void) { simt::g_race_build = true; }
void __tsan_func_entry(void *) {}
void __tsan_func_exit(void) {}
void __tsan_vptr_update(void **, void *) {}
void __tsan_vptr_read(void **) {}

// Atomic operations of instrumented code (a function-local static's guard, std::atomic in host code of
// the .cu files): performed for real, sequentially consistent whatever order was asked, and not checked.
#define SIMT_ATOMICS(n, T)                                                                                            \
    T __tsan_atomic##n##_load(const volatile T *a, int) { return __atomic_load_n(a, __ATOMIC_SEQ_CST); }              \
    void __tsan_atomic##n##_store(volatile T *a, T v, int) { __atomic_store_n(a, v, __ATOMIC_SEQ_CST); }              \
    T __tsan_atomic##n##_exchange(volatile T *a, T v, int) { return __atomic_exchange_n(a, v, __ATOMIC_SEQ_CST); }    \
    T __tsan_atomic##n##_fetch_add(volatile T *a, T v, int) { return __atomic_fetch_add(a, v, __ATOMIC_SEQ_CST); }    \
    T __tsan_atomic##n##_fetch_sub(volatile T *a, T v, int) { return __atomic_fetch_sub(a, v, __ATOMIC_SEQ_CST); }    \
    T __tsan_atomic##n##_fetch_and(volatile T *a, T v, int) { return __atomic_fetch_and(a, v, __ATOMIC_SEQ_CST); }    \
    T __tsan_atomic##n##_fetch_or(volatile T *a, T v, int) { return __atomic_fetch_or(a, v, __ATOMIC_SEQ_CST); }      \
    T __tsan_atomic##n##_fetch_xor(volatile T *a, T v, int) { return __atomic_fetch_xor(a, v, __ATOMIC_SEQ_CST); }    \
    T __tsan_atomic##n##_fetch_nand(volatile T *a, T v, int) { return __atomic_fetch_nand(a, v, __ATOMIC_SEQ_CST); }  \
    int __tsan_atomic##n##_compare_exchange_strong(volatile T *a, T *c, T v, int, int)                               \
    {                                                                                                                 \
        return __atomic_compare_exchange_n(a, c, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);                       \
    }                                                                                                                 \
    int __tsan_atomic##n##_compare_exchange_weak(volatile T *a, T *c, T v, int, int)                                 \
    {                                                                                                                 \
        return __atomic_compare_exchange_n(a, c, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);                       \
    }                                                                                                                 \
    T __tsan_atomic##n##_compare_exchange_val(volatile T *a, T c, T v, int, int)                                      \
    {                                                                                                                 \
        __atomic_compare_exchange_n(a, &c, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);                             \
        return c;                                                                                                     \
    }
SIMT_ATOMICS(8, int8_t)
SIMT_ATOMICS(16, int16_t)
SIMT_ATOMICS(32, int32_t)
SIMT_ATOMICS(64, int64_t)
#undef SIMT_ATOMICS
void __tsan_atomic_thread_fence(int) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
void __tsan_atomic_signal_fence(int) { __atomic_signal_fence(__ATOMIC_SEQ_CST); }
}

#if SIMT_ASAN
namespace {
// An AddressSanitizer report inside a kernel fails the launch (ASan continues only when built with
// -fsanitize-recover=address and run with halt_on_error=0).
void asan_report(const char *report)
{
    if (simt::g_cur == nullptr) return;
    std::string line;
    const char *e = strstr(report, "ERROR: AddressSanitizer:");
    if (e != nullptr) line.assign(e, strcspn(e, "\n"));
    const char *rw = strstr(report, "READ of size");
    if (rw == nullptr) rw = strstr(report, "WRITE of size");
    std::string access = rw ? std::string(rw, strcspn(rw, "\n")) : std::string();
    simt::fail(simt::strf("out-of-bounds access in thread %d (%s; %s)", simt::g_cur->linear, line.c_str(), access.c_str()));
}
struct AsanHook {
    AsanHook() { __asan_set_error_report_callback(asan_report); }
} g_asan_hook;
} // namespace
#endif

// ---------------------------------------------------------------- the runtime API

using simt::g_state_mutex;

extern "C" int ccomp_simt_set_schedule(const char *spec)
{
    if (spec == nullptr) return -1;
    if (strcmp(spec, "forward") == 0) simt::g_order = simt::FORWARD;
    else if (strcmp(spec, "reverse") == 0) simt::g_order = simt::REVERSE;
    else if (strncmp(spec, "random:", 7) == 0 && spec[7] != 0) {
        char *end;
        errno = 0;
        const unsigned long long seed = strtoull(spec + 7, &end, 10);
        if (*end != 0 || errno != 0) return -1;
        simt::g_order = simt::RANDOM;
        simt::g_seed = seed;
    } else
        return -1;
    simt::g_schedule_read = true; // an explicit choice overrides the environment
    return 0;
}

extern "C" const char *ccomp_simt_report(void)
{
    std::lock_guard<std::mutex> lk(g_state_mutex);
    return simt::g_report.c_str();
}

extern "C" void ccomp_simt_reset(void)
{
    std::lock_guard<std::mutex> lk(g_state_mutex);
    simt::g_sticky = cudaSuccess;
    simt::g_report.clear();
    simt::g_last = cudaSuccess;
}

extern "C" unsigned long long ccomp_simt_launch_count(void)
{
    std::lock_guard<std::mutex> lk(g_state_mutex);
    return simt::g_launches;
}

cudaError_t cudaFuncSetAttribute(const void *func, enum cudaFuncAttribute attr, int value)
{
    if (func == nullptr) return simt::set_last(cudaErrorInvalidDeviceFunction);
    if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
        if (value < 0 || value > 232448) return simt::set_last(cudaErrorInvalidValue);
        std::lock_guard<std::mutex> lk(g_state_mutex);
        simt::g_smem_optin[func] = value;
    }
    return cudaSuccess;
}

namespace {
cudaError_t sticky()
{
    std::lock_guard<std::mutex> lk(g_state_mutex);
    return simt::g_sticky;
}
} // namespace

cudaError_t cudaGetDeviceCount(int *count)
{
    if (count == nullptr) return simt::set_last(cudaErrorInvalidValue);
    *count = 1;
    return cudaSuccess;
}

cudaError_t cudaGetDevice(int *device)
{
    if (device == nullptr) return simt::set_last(cudaErrorInvalidValue);
    *device = 0;
    return cudaSuccess;
}

cudaError_t cudaSetDevice(int device)
{
    return device == 0 ? cudaSuccess : simt::set_last(cudaErrorInvalidDevice);
}

static int multiprocessors()
{
    const char *s = getenv("CCOMP_SIMT_SMS");
    const int n = s ? atoi(s) : 0;
    return n > 0 ? n : 4;
}

cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp *prop, int device)
{
    if (prop == nullptr) return simt::set_last(cudaErrorInvalidValue);
    if (device != 0) return simt::set_last(cudaErrorInvalidDevice);
    memset(prop, 0, sizeof *prop);
    snprintf(prop->name, sizeof prop->name, "ccomp SIMT emulator");
    prop->totalGlobalMem = (size_t)8 << 30;
    prop->sharedMemPerBlock = 48 * 1024;
    prop->sharedMemPerBlockOptin = 232448;
    prop->regsPerBlock = 65536;
    prop->warpSize = 32;
    prop->maxThreadsPerBlock = 1024;
    prop->maxThreadsDim[0] = prop->maxThreadsDim[1] = 1024;
    prop->maxThreadsDim[2] = 64;
    prop->maxGridSize[0] = 0x7fffffff;
    prop->maxGridSize[1] = prop->maxGridSize[2] = 65535;
    prop->major = 9;
    prop->minor = 0;
    prop->multiProcessorCount = multiprocessors();
    return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int *value, enum cudaDeviceAttr attr, int device)
{
    if (value == nullptr) return simt::set_last(cudaErrorInvalidValue);
    if (device != 0) return simt::set_last(cudaErrorInvalidDevice);
    switch (attr) {
    case cudaDevAttrMaxThreadsPerBlock: *value = 1024; break;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = 48 * 1024; break;
    case cudaDevAttrWarpSize: *value = 32; break;
    case cudaDevAttrMultiProcessorCount: *value = multiprocessors(); break;
    case cudaDevAttrComputeCapabilityMajor: *value = 9; break;
    case cudaDevAttrComputeCapabilityMinor: *value = 0; break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = 232448; break;
    default: return simt::set_last(cudaErrorInvalidValue);
    }
    return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize(void) { return sticky(); }

cudaError_t cudaDeviceReset(void)
{
    ccomp_simt_reset();
    return cudaSuccess;
}

cudaError_t cudaRuntimeGetVersion(int *version)
{
    if (version == nullptr) return simt::set_last(cudaErrorInvalidValue);
    *version = 12000;
    return cudaSuccess;
}

cudaError_t cudaDriverGetVersion(int *version)
{
    if (version == nullptr) return simt::set_last(cudaErrorInvalidValue);
    *version = 12000;
    return cudaSuccess;
}

cudaError_t cudaGetLastError(void)
{
    const cudaError_t s = sticky();
    if (s != cudaSuccess) return s;
    const cudaError_t e = simt::g_last;
    simt::g_last = cudaSuccess;
    return e;
}

cudaError_t cudaPeekAtLastError(void)
{
    const cudaError_t s = sticky();
    return s != cudaSuccess ? s : simt::g_last;
}

const char *cudaGetErrorName(cudaError_t e)
{
    switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInitializationError: return "cudaErrorInitializationError";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevicePointer: return "cudaErrorInvalidDevicePointer";
    case cudaErrorInvalidMemcpyDirection: return "cudaErrorInvalidMemcpyDirection";
    case cudaErrorInvalidDeviceFunction: return "cudaErrorInvalidDeviceFunction";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorNotReady: return "cudaErrorNotReady";
    case cudaErrorLaunchOutOfResources: return "cudaErrorLaunchOutOfResources";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    default: return "cudaErrorUnknown";
    }
}

const char *cudaGetErrorString(cudaError_t e)
{
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInitializationError: return "initialization error";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevicePointer: return "invalid device pointer";
    case cudaErrorInvalidMemcpyDirection: return "invalid copy direction for memcpy";
    case cudaErrorInvalidDeviceFunction: return "invalid device function";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorNotReady: return "device not ready";
    case cudaErrorLaunchOutOfResources: return "too many resources requested for launch";
    case cudaErrorLaunchFailure: {
        // the report of the failed launch (stable until ccomp_simt_reset / cudaDeviceReset)
        std::lock_guard<std::mutex> lk(g_state_mutex);
        return simt::g_report.empty() ? "unspecified launch failure" : simt::g_report.c_str();
    }
    default: return "unknown error";
    }
}

cudaError_t cudaMalloc(void **ptr, size_t size)
{
    if (ptr == nullptr) return simt::set_last(cudaErrorInvalidValue);
    if (sticky() != cudaSuccess) return sticky();
    // exact size, so that AddressSanitizer sees overruns; 256-byte aligned as cudaMalloc guarantees (kernels
    // check it); a request of 0 bytes still gives a distinct pointer
    void *p = nullptr;
    if (posix_memalign(&p, 256, size > 0 ? size : 1) != 0) return simt::set_last(cudaErrorMemoryAllocation);
    std::lock_guard<std::mutex> lk(g_state_mutex);
    simt::g_allocs[(uintptr_t)p] = size;
    *ptr = p;
    return cudaSuccess;
}

cudaError_t cudaFree(void *ptr)
{
    if (ptr == nullptr) return cudaSuccess;
    std::lock_guard<std::mutex> lk(g_state_mutex);
    auto it = simt::g_allocs.find((uintptr_t)ptr);
    if (it == simt::g_allocs.end()) return simt::set_last(cudaErrorInvalidValue);
    simt::g_allocs.erase(it);
    free(ptr);
    return cudaSuccess;
}

cudaError_t cudaPointerGetAttributes(struct cudaPointerAttributes *attr, const void *ptr)
{
    if (attr == nullptr) return simt::set_last(cudaErrorInvalidValue);
    std::lock_guard<std::mutex> lk(g_state_mutex);
    const bool dev = ptr != nullptr && simt::is_device(ptr, 0);
    attr->type = dev ? cudaMemoryTypeDevice : cudaMemoryTypeUnregistered;
    attr->device = dev ? 0 : -2;
    attr->devicePointer = dev ? (void *)ptr : nullptr;
    attr->hostPointer = dev ? nullptr : (void *)ptr;
    return cudaSuccess;
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t count, enum cudaMemcpyKind kind)
{
    const cudaError_t s = sticky();
    if (s != cudaSuccess) return s;
    if (count == 0) return cudaSuccess;
    if (dst == nullptr || src == nullptr) return simt::set_last(cudaErrorInvalidValue);
    {
        std::lock_guard<std::mutex> lk(g_state_mutex);
        const bool dst_dev = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
        const bool src_dev = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
        if (kind > cudaMemcpyDefault) return simt::set_last(cudaErrorInvalidMemcpyDirection);
        if ((dst_dev && !simt::is_device(dst, count)) || (src_dev && !simt::is_device(src, count)))
            return simt::set_last(cudaErrorInvalidValue);
    }
    memmove(dst, src, count);
    return cudaSuccess;
}

cudaError_t cudaMemcpy2D(void *dst, size_t dpitch, const void *src, size_t spitch, size_t width, size_t height,
                         enum cudaMemcpyKind kind)
{
    const cudaError_t s = sticky();
    if (s != cudaSuccess) return s;
    if (width == 0 || height == 0) return cudaSuccess;
    if (dst == nullptr || src == nullptr || width > dpitch || width > spitch) return simt::set_last(cudaErrorInvalidValue);
    {
        std::lock_guard<std::mutex> lk(g_state_mutex);
        const bool dst_dev = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
        const bool src_dev = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
        if (kind > cudaMemcpyDefault) return simt::set_last(cudaErrorInvalidMemcpyDirection);
        if ((dst_dev && !simt::is_device(dst, (height - 1) * dpitch + width)) ||
            (src_dev && !simt::is_device(src, (height - 1) * spitch + width)))
            return simt::set_last(cudaErrorInvalidValue);
    }
    for (size_t r = 0; r < height; r++) memmove((char *)dst + r * dpitch, (const char *)src + r * spitch, width);
    return cudaSuccess;
}

cudaError_t cudaMemcpy2DAsync(void *dst, size_t dpitch, const void *src, size_t spitch, size_t width, size_t height,
                              enum cudaMemcpyKind kind, cudaStream_t)
{
    return cudaMemcpy2D(dst, dpitch, src, spitch, width, height, kind);
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t count, enum cudaMemcpyKind kind, cudaStream_t)
{
    return cudaMemcpy(dst, src, count, kind);
}

cudaError_t cudaMemset(void *ptr, int value, size_t count)
{
    const cudaError_t s = sticky();
    if (s != cudaSuccess) return s;
    if (count == 0) return cudaSuccess;
    {
        std::lock_guard<std::mutex> lk(g_state_mutex);
        if (!simt::is_device(ptr, count)) return simt::set_last(cudaErrorInvalidValue);
    }
    memset(ptr, value, count);
    return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void *ptr, int value, size_t count, cudaStream_t)
{
    return cudaMemset(ptr, value, count);
}

struct CUstream_st {
    int unused;
};
struct CUevent_st {
    int unused;
};

cudaError_t cudaStreamCreate(cudaStream_t *stream)
{
    if (stream == nullptr) return simt::set_last(cudaErrorInvalidValue);
    *stream = new CUstream_st();
    return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t stream)
{
    delete stream;
    return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t) { return sticky(); }

cudaError_t cudaEventCreate(cudaEvent_t *event)
{
    if (event == nullptr) return simt::set_last(cudaErrorInvalidValue);
    *event = new CUevent_st();
    return cudaSuccess;
}

cudaError_t cudaEventDestroy(cudaEvent_t event)
{
    delete event;
    return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t)
{
    return event == nullptr ? simt::set_last(cudaErrorInvalidResourceHandle) : sticky();
}

cudaError_t cudaEventSynchronize(cudaEvent_t event)
{
    return event == nullptr ? simt::set_last(cudaErrorInvalidResourceHandle) : sticky();
}

cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end)
{
    if (ms == nullptr || start == nullptr || end == nullptr) return simt::set_last(cudaErrorInvalidValue);
    *ms = 0.0f; // no timing in the emulator
    return cudaSuccess;
}
