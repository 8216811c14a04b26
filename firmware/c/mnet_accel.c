/* mobilenet-accel C driver; see mnet_driver.h. Needs the build's generated mnet_accel.h
 * (register map, memory map) next to it: cc -c mnet_accel.c */
#include "mnet_accel.h"
#include "mnet_driver.h"

#define DRAIN_POLLS 10000u              /* after a soft reset: wait for BUSY to drop */

static uint32_t rd(const mnet_port *p, uint32_t off) { return p->read32(p->ctx, off); }
static void wr(const mnet_port *p, uint32_t off, uint32_t v) { p->write32(p->ctx, off, v); }

int mnet_identify(const mnet_port *p)
{
    if (rd(p, MNET_REG_ID) != MNET_ACCEL_ID)
        return MNET_E_ID;
    if ((rd(p, MNET_REG_VERSION) >> 16) != (MNET_REGMAP_VERSION >> 16))
        return MNET_E_VERSION;
    return MNET_OK;
}

int mnet_load_image(const mnet_port *p, const void *image, uint32_t n)
{
    if (n != MNET_DDR_IMAGE_BYTES)
        return MNET_E_ARG;
    p->write_mem(p->ctx, MNET_DDR_BASE, image, n);
    return MNET_OK;
}

static void soft_reset(const mnet_port *p)
{
    uint32_t i;
    wr(p, MNET_REG_CTRL, MNET_CTRL_SOFT_RESET_MASK);
    for (i = 0; i < DRAIN_POLLS && (rd(p, MNET_REG_STATUS) & MNET_STATUS_BUSY_MASK); i++)
        ;
}

int mnet_run(const mnet_port *p, uint64_t program_addr, uint32_t timeout_us, uint32_t poll_us,
             mnet_result *r)
{
    uint32_t waited = 0, status, lo;
    wr(p, MNET_REG_PROG_ADDR_LO, (uint32_t)program_addr);
    wr(p, MNET_REG_PROG_ADDR_HI, (uint32_t)(program_addr >> 32));
    wr(p, MNET_REG_STATUS, MNET_STATUS_DONE_MASK | MNET_STATUS_ERROR_MASK);   /* W1C */
    wr(p, MNET_REG_CTRL, MNET_CTRL_START_MASK);
    r->timed_out = 0;
    for (;;) {
        status = rd(p, MNET_REG_STATUS);
        if (status & MNET_STATUS_DONE_MASK)
            break;
        if (waited >= timeout_us) {
            r->timed_out = 1;
            break;
        }
        p->sleep_us(p->ctx, poll_us);
        waited += poll_us;
    }
    r->status = status;
    r->error_code = rd(p, MNET_REG_ERROR_CODE) & MNET_ERROR_CODE_CODE_MASK;
    r->layer_count = rd(p, MNET_REG_LAYER_COUNT) & MNET_LAYER_COUNT_COUNT_MASK;
    lo = rd(p, MNET_REG_CYCLES_LO);                     /* latches CYCLES_HI */
    r->cycles = ((uint64_t)rd(p, MNET_REG_CYCLES_HI) << 32) | lo;
    if (r->timed_out) {
        soft_reset(p);
        return MNET_E_TIMEOUT;
    }
    return (status & MNET_STATUS_ERROR_MASK) ? MNET_E_RUN : MNET_OK;
}

void mnet_layer_cycles(const mnet_port *p, uint32_t *cycles, uint32_t n)
{
    uint32_t i;
    for (i = 0; i < n && i < MNET_REG_LAYER_CYCLES_COUNT; i++)
        cycles[i] = rd(p, MNET_REG_LAYER_CYCLES(i));
}

int mnet_classify(const mnet_port *p, const int8_t *input, uint32_t input_bytes,
                  int8_t *scores, uint32_t timeout_us, mnet_result *r)
{
    uint32_t i, best = 0;
    int rc;
    if (input_bytes != MNET_INPUT_BYTES)
        return MNET_E_ARG;
    p->write_mem(p->ctx, MNET_INPUT_ADDR, input, input_bytes);
    rc = mnet_run(p, MNET_PROGRAM_ADDR, timeout_us, timeout_us / 1000u + 1u, r);
    if (rc != MNET_OK)
        return rc;
    p->read_mem(p->ctx, MNET_OUTPUT_ADDR, scores, MNET_NUM_CLASSES);
    for (i = 1; i < MNET_NUM_CLASSES; i++)
        if (scores[i] > scores[best])
            best = i;
    return (int)best;
}
