/* mobilenet-accel C driver: the host side of the register contract (mnet_accel.h), for a
 * soft CPU next to the accelerator or a Linux host that maps its registers and DRAM.
 *
 * All device access goes through an mnet_port: five callbacks and their context, so the
 * same code runs on bare metal (volatile pointers), under Linux (/dev/mem or UIO mmap) and
 * in the project's tests (callbacks into the simulated SoC). The call sequence is the one
 * firmware/driver.py (the Python driver) uses, register for register.
 */
#ifndef MNET_DRIVER_H
#define MNET_DRIVER_H

#include <stdint.h>

typedef struct mnet_port {
    uint32_t (*read32)(void *ctx, uint32_t offset);             /* register window */
    void (*write32)(void *ctx, uint32_t offset, uint32_t value);
    void (*read_mem)(void *ctx, uint64_t addr, void *dst, uint32_t n);   /* accelerator */
    void (*write_mem)(void *ctx, uint64_t addr, const void *src, uint32_t n); /* addresses */
    void (*sleep_us)(void *ctx, uint32_t us);                   /* let device time pass */
    void *ctx;
} mnet_port;

typedef struct mnet_result {
    uint32_t status;        /* STATUS after the run */
    uint32_t error_code;    /* ERROR_CODE (0: none) */
    uint32_t layer_count;   /* LAYER_COUNT: layers whose output reached DDR */
    uint64_t cycles;        /* CYCLES_HI:CYCLES_LO */
    int timed_out;          /* DONE did not come in time; the core was soft-reset */
} mnet_result;

/* Return codes (negative) of the functions below. */
#define MNET_OK 0
#define MNET_E_ID (-1)          /* ID is not the accelerator's */
#define MNET_E_VERSION (-2)     /* register map major version differs from this build's */
#define MNET_E_TIMEOUT (-3)     /* no DONE within the timeout */
#define MNET_E_RUN (-4)         /* DONE with STATUS.ERROR: see result->error_code */
#define MNET_E_ARG (-5)         /* a size that does not match this build */

int mnet_identify(const mnet_port *p);
/* Write the build's DDR image (firmware/ddr_image.bin, MNET_DDR_IMAGE_BYTES) at its base. */
int mnet_load_image(const mnet_port *p, const void *image, uint32_t n);
/* PROG_ADDR, clear STATUS, START; poll STATUS every poll_us until DONE or timeout_us. */
int mnet_run(const mnet_port *p, uint64_t program_addr, uint32_t timeout_us, uint32_t poll_us,
             mnet_result *r);
/* LAYER_CYCLES[0..n-1] of the last run (n <= MNET_LAYER_COUNT). */
void mnet_layer_cycles(const mnet_port *p, uint32_t *cycles, uint32_t n);
/* One image: write the input region (its bytes as the compiler lays them out: channel
 * padding, im2col patches; firmware.deploy.Deployment.input_bytes), run, read the
 * MNET_NUM_CLASSES int8 scores. Returns the class (argmax, first on ties) or an error. */
int mnet_classify(const mnet_port *p, const int8_t *input, uint32_t input_bytes,
                  int8_t *scores, uint32_t timeout_us, mnet_result *r);

#endif /* MNET_DRIVER_H */
