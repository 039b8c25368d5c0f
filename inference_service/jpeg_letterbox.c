/* A JPEG decoded straight into the letterbox, the letterbox running on a second CPU while the decode goes on.
 *
 * After a lone request's decode (about 3 ms for a phone photo) the letterbox took another 1.2 ms with cold caches,
 * while the other CPU of the instance sat idle. libjpeg-turbo's scanline API hands out rows as it decodes them:
 * here a helper thread on that other CPU letterboxes (letterbox_rows, letterbox.c) every output row whose source
 * rows are decoded, so that by the end of the decode only the last band is left. The pixels are simplejpeg's
 * (libjpeg-turbo with its settings: the accurate integer IDCT, fancy upsampling, RGB out), so the tensor is
 * bit-identical to the decode-then-letterbox path (tests/server/test_jpeg_letterbox.py holds it to that); a JPEG
 * the system's libjpeg-turbo refuses goes to simplejpeg, which bundles a newer one, to decide.
 *
 * Built into _letterbox.so by native.py when libjpeg's headers are there, and called through ctypes (which
 * releases the GIL). A libjpeg warning is an error, as simplejpeg's strict mode has it.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <jpeglib.h>
#include <jerror.h>

#if !defined(LIBJPEG_TURBO_VERSION_NUMBER) || JPEG_LIB_VERSION != 62 || !defined(__linux__)
#error "jpeg_letterbox.c needs Linux (futexes) and libjpeg-turbo's jpeg62 API (simplejpeg's pixels)"
#endif

int letterbox_rows(const uint8_t *src, int64_t src_stride, int64_t row_len, const int32_t *ys0, const int32_t *ys1,
                   const int32_t *b0, const int32_t *b1, const int32_t *ix0, const int32_t *ix1,
                   const int32_t *a0, const int32_t *a1, int64_t new_w, int64_t y0, int64_t y1,
                   float *dst, int64_t plane_stride, int64_t row_stride);

/* A helper that went to sleep is woken each time this many more source rows are decoded: fewer wake-ups cost
 * less, more leave it further behind. 128 and 256 measured alike on bus.jpg; 32 was 0.2 ms slower. */
#define WAKE_ROWS 128
/* How long the helper spins for more rows before it sleeps (and the caller for the helper's last band before it
 * yields its CPU): ~40 µs on AMD Zen (a pause is ~64 cycles), ~90 µs on recent Intel (~140), about what a band of
 * 16 rows of a phone photo takes to decode; on arm64 a pause is nothing and the spin a few µs. */
#define SPIN_PAUSES 2000
#define WAKE_UP (-1) /* a value no decode reaches: the caller stores it in `decoded` to wake a sleeping helper */

/* What the caller and the helper share. The helper claims bands of rows it can letterbox; when the decode ends the
 * caller claims every row left and letterboxes them itself, so it never waits for the helper to wake up (~0.1-0.2
 * ms on a vCPU that went idle) or to finish: only for a band the helper is in the middle of. Whichever of the two
 * lets go of the job last frees it. */
typedef struct {
    const uint8_t *src;
    int64_t row_len, new_w, new_h;
    const int32_t *ys0, *ys1, *b0, *b1, *ix0, *ix1, *a0, *a1;
    float *dst;
    int64_t plane_stride, row_stride;
    _Atomic int32_t decoded; /* source rows decoded so far, or WAKE_UP once the caller is done */
    _Atomic int64_t claimed; /* output rows below this are letterboxed or being letterboxed */
    _Atomic int done;        /* the caller is returning: the helper must not touch the plan or the buffers */
    _Atomic int busy;        /* the helper is between checking `done` and finishing its band */
    _Atomic int status;      /* letterbox_rows' results, 0 or -1 */
    _Atomic int holders;     /* 2 while both hold the job */
} job;

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf escape;
} error_manager;

static void on_error(j_common_ptr cinfo) { longjmp(((error_manager *)cinfo->err)->escape, 1); }

/* Level -1 is a warning about corrupt data ("premature end of data segment"): an error here, as in simplejpeg. */
static void on_message(j_common_ptr cinfo, int level) {
    if (level < 0) longjmp(((error_manager *)cinfo->err)->escape, 1);
}

static void futex_wait(_Atomic int32_t *word, int32_t seen) {
    syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, seen, NULL, NULL, 0);
}

static void futex_wake(_Atomic int32_t *word) { syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0); }

static void pause_briefly(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* Wait until more rows than `seen` are decoded (or the caller is done): spinning first, since the next band of
 * rows is usually a few tens of microseconds away and a sleeping thread takes ~0.1 ms to wake up on a vCPU that
 * went idle (spinning instead: decode + letterbox 3.15 against 3.29 ms), then asleep. */
static void wait_for_rows(job *j, int32_t seen) {
    for (int i = 0; i < SPIN_PAUSES; i++) {
        if (atomic_load(&j->decoded) != seen || atomic_load(&j->done)) return;
        pause_briefly();
    }
    futex_wait(&j->decoded, seen);
}

static void let_go(job *j) {
    if (atomic_fetch_sub(&j->holders, 1) == 1) free(j);
}

/* Letterbox rows y0..y1-1 of the job. */
static int letterbox_band(const job *j, int64_t y0, int64_t y1) {
    return letterbox_rows(j->src, j->row_len, j->row_len, j->ys0, j->ys1, j->b0, j->b1, j->ix0, j->ix1, j->a0, j->a1,
                          j->new_w, y0, y1, j->dst + y0 * j->row_stride, j->plane_stride, j->row_stride);
}

/* The helper's part of a job: claim and letterbox every output row whose lower source row is decoded, waiting for
 * more, until the caller is done. `busy` is raised before `done` is read (both sequentially consistent), so the
 * caller, which sets `done` and then waits for `busy` to fall, never returns while the helper reads its buffers. */
static void follow_decode(job *j) {
    for (;;) {
        atomic_store(&j->busy, 1);
        if (atomic_load(&j->done)) break;
        int32_t decoded = atomic_load(&j->decoded);
        int64_t y = atomic_load(&j->claimed), y1 = y;
        while (y1 < j->new_h && j->ys1[y1] < decoded) y1++;
        int claimed = y1 > y && atomic_compare_exchange_strong(&j->claimed, &y, y1);
        if (claimed && letterbox_band(j, y, y1) != 0) atomic_store(&j->status, -1);
        atomic_store(&j->busy, 0);
        if (!claimed) wait_for_rows(j, decoded);
    }
    atomic_store(&j->busy, 0);
    let_go(j);
}

/* The helper thread: started on first use and kept, since starting a thread took ~0.1 ms of the caller's time (the
 * clone and the move to its CPU) on every request. One job at a time: a caller that finds it taken letterboxes
 * every row itself. */
static struct {
    pthread_mutex_t start_lock;
    int started;
    pthread_t thread;
    int cpu;                /* the CPU it is pinned to */
    _Atomic(job *) next;    /* the job handed to it and not yet picked up */
    _Atomic int32_t handed; /* jobs handed so far: what it sleeps on */
    _Atomic int taken;      /* a job is handed to it and it has not let go of it yet */
} helper = {.start_lock = PTHREAD_MUTEX_INITIALIZER};

/* In a child process (after fork) there is no helper thread: start another one if needed. */
static void forget_helper(void) {
    pthread_mutex_init(&helper.start_lock, NULL);
    helper.started = 0;
    atomic_store(&helper.next, NULL);
    atomic_store(&helper.taken, 0);
}

static void *serve_jobs(void *unused) {
    (void)unused;
    int32_t seen = 0;
    for (;;) {
        int32_t handed = atomic_load(&helper.handed);
        if (handed == seen) {
            futex_wait(&helper.handed, seen);
            continue;
        }
        seen = handed;
        job *j = atomic_exchange(&helper.next, NULL);
        if (!j) continue;
        follow_decode(j);
        atomic_store(&helper.taken, 0);
    }
    return NULL;
}

/* The helper thread, started (the first time) or moved (when the spare CPU changed, a new cpuset) to `cpu`; 0 when
 * that failed: `cpu` is not one this process may use, or no thread can start. Holding start_lock. */
static int helper_on(int cpu) {
    cpu_set_t cpus;
    CPU_ZERO(&cpus);
    CPU_SET(cpu, &cpus);
    if (helper.started) {
        if (cpu != helper.cpu && pthread_setaffinity_np(helper.thread, sizeof cpus, &cpus) != 0) return 0;
        helper.cpu = cpu;
        return 1;
    }
    pthread_attr_t attr;
    if (pthread_attr_init(&attr) != 0) return 0;
    helper.started = pthread_attr_setaffinity_np(&attr, sizeof cpus, &cpus) == 0 &&
                     pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED) == 0 &&
                     pthread_create(&helper.thread, &attr, serve_jobs, NULL) == 0;
    pthread_attr_destroy(&attr);
    if (helper.started) {
        static int fork_handler;
        if (!fork_handler) fork_handler = pthread_atfork(NULL, NULL, forget_helper) == 0;
        helper.cpu = cpu;
    }
    return helper.started;
}

/* Hand the job to the helper thread on `cpu`; 0 when it is busy with another job or cannot run there (then the
 * caller letterboxes every row). */
static int hand_to_helper(job *j, int cpu) {
    int idle = 0;
    if (!atomic_compare_exchange_strong(&helper.taken, &idle, 1)) return 0;
    pthread_mutex_lock(&helper.start_lock);
    int ready = helper_on(cpu);
    pthread_mutex_unlock(&helper.start_lock);
    if (!ready) {
        atomic_store(&helper.taken, 0);
        return 0;
    }
    atomic_store(&j->holders, 2);
    atomic_store(&helper.next, j);
    atomic_fetch_add(&helper.handed, 1);
    futex_wake(&helper.handed);
    return 1;
}

/* The caller's end: stop the helper touching the job, wait out a band it is in the middle of, let go. Returns the
 * helper's letterbox status. */
static int finish(job *j) {
    atomic_store(&j->done, 1);
    atomic_store(&j->decoded, WAKE_UP);
    futex_wake(&j->decoded);
    for (int i = 0; atomic_load(&j->busy); i++) { /* its CPU may be ours (one CPU): then let it run */
        if (i < SPIN_PAUSES) pause_briefly();
        else sched_yield();
    }
    int status = atomic_load(&j->status);
    let_go(j);
    return status;
}

/* The end of a call, whichever way it went: libjpeg's state freed, the helper stopped, the rows freed. Returns
 * `result`, or the helper's letterbox status when `result` is 0. */
static int end_call(j_decompress_ptr cinfo, job *j, uint8_t *pixels, int result) {
    jpeg_destroy_decompress(cinfo);
    int helper_status = finish(j);
    free(pixels);
    return result ? result : helper_status;
}

/* Decode the `len` bytes of `jpeg` (an h x w image, as its header says) into RGB rows of a buffer of its own
 * and letterbox them into `dst` as letterbox_rows does (same plan arrays, new_w x new_h, strides in floats).
 * The letterbox runs in the helper thread on CPU `helper_cpu` as rows come; with helper_cpu < 0 (or if the helper
 * is busy or cannot start) after the decode, in the calling thread.
 * Returns 0; -1 when memory ran out; -2 when the data is not a JPEG this libjpeg decodes to h x w (the caller then
 * lets simplejpeg's decode say what is wrong, or decode it: it bundles a newer libjpeg-turbo). */
int jpeg_letterbox(const uint8_t *jpeg, int64_t len, int64_t h, int64_t w, const int32_t *ys0,
                   const int32_t *ys1, const int32_t *b0, const int32_t *b1, const int32_t *ix0, const int32_t *ix1,
                   const int32_t *a0, const int32_t *a1, int64_t new_w, int64_t new_h, float *dst,
                   int64_t plane_stride, int64_t row_stride, int helper_cpu) {
    job *j = calloc(1, sizeof *j);
    uint8_t *pixels = malloc((size_t)(h * w * 3));
    if (!j || !pixels) {
        free(j);
        free(pixels);
        return -1;
    }
    *j = (job){pixels, w * 3, new_w, new_h, ys0, ys1, b0, b1, ix0, ix1, a0, a1, dst, plane_stride, row_stride};
    atomic_store(&j->holders, 1);
    struct jpeg_decompress_struct cinfo;
    error_manager errors;
    cinfo.err = jpeg_std_error(&errors.pub);
    errors.pub.error_exit = on_error;
    errors.pub.emit_message = on_message;
    if (setjmp(errors.escape)) return end_call(&cinfo, j, pixels, errors.pub.msg_code == JERR_OUT_OF_MEMORY ? -1 : -2);
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, jpeg, (unsigned long)len);
    jpeg_read_header(&cinfo, TRUE);
    cinfo.out_color_space = JCS_RGB;
    cinfo.dct_method = JDCT_ISLOW;
    cinfo.do_fancy_upsampling = TRUE;
    jpeg_start_decompress(&cinfo);
    if ((int64_t)cinfo.output_width != w || (int64_t)cinfo.output_height != h || cinfo.output_components != 3) {
        return end_call(&cinfo, j, pixels, -2);
    }
    int helping = helper_cpu >= 0 && hand_to_helper(j, helper_cpu);
    JSAMPROW rows[16];
    int64_t wake_at = WAKE_ROWS;
    while (cinfo.output_scanline < cinfo.output_height) {
        JDIMENSION n = 0;
        for (; n < 16 && cinfo.output_scanline + n < cinfo.output_height; n++) {
            rows[n] = pixels + (int64_t)(cinfo.output_scanline + n) * j->row_len;
        }
        jpeg_read_scanlines(&cinfo, rows, n);
        atomic_store(&j->decoded, (int32_t)cinfo.output_scanline);
        if (helping && (int64_t)cinfo.output_scanline >= wake_at) {
            futex_wake(&j->decoded);
            wake_at += WAKE_ROWS;
        }
    }
    jpeg_finish_decompress(&cinfo);
    int64_t rest = atomic_exchange(&j->claimed, new_h); /* every row the helper has not claimed is ours */
    return end_call(&cinfo, j, pixels, rest < new_h ? letterbox_band(j, rest, new_h) : 0);
}
