// Behavioural model of the Lattice ECP5 DP16KD in the configurations `rtl_gen.bram`
// instantiates: port A writes, port B reads, both at one data width (1, 2, 4, 9, 18, or 36
// in the pseudo dual-port mode), port B through its output register (REGMODE_B OUTREG), no
// reset (RSTA, RSTB low), both ports on one clock. Pins as
// Yosys' ECP5 map wires an inferred memory (share/lattice/brams_map_16kd.v): the word address
// on AD13..AD[log2 of the words' 16384 / depth], the 9-bit lanes' byte enables on AD0..AD1
// (x18) or AD0..AD3 (x36) with WEA high, data on DIA / DOB (x36: DI[17:0] on DIA, DI[35:18]
// on DIB, DO[17:0] on DOA, DO[35:18] on DOB). Any other setting stops the simulation: this
// models the wiring `rtl_gen.bram` uses, not the whole primitive. (Yosys' cells_sim_ecp5.v
// has DP16KD as a blackbox only.)
module DP16KD #(
    parameter DATA_WIDTH_A = 18, parameter DATA_WIDTH_B = 18,
    parameter REGMODE_A = "NOREG", parameter REGMODE_B = "NOREG",
    parameter RESETMODE = "SYNC", parameter ASYNC_RESET_RELEASE = "SYNC",
    parameter CSDECODE_A = "0b000", parameter CSDECODE_B = "0b000",
    parameter WRITEMODE_A = "NORMAL", parameter WRITEMODE_B = "NORMAL",
    parameter CLKAMUX = "CLKA", parameter CLKBMUX = "CLKB", parameter GSR = "ENABLED"
) (
    input DIA17, DIA16, DIA15, DIA14, DIA13, DIA12, DIA11, DIA10, DIA9, DIA8, DIA7, DIA6, DIA5, DIA4, DIA3, DIA2, DIA1, DIA0,
    input ADA13, ADA12, ADA11, ADA10, ADA9, ADA8, ADA7, ADA6, ADA5, ADA4, ADA3, ADA2, ADA1, ADA0,
    input CEA, OCEA, CLKA, WEA, RSTA, CSA2, CSA1, CSA0,
    output DOA17, DOA16, DOA15, DOA14, DOA13, DOA12, DOA11, DOA10, DOA9, DOA8, DOA7, DOA6, DOA5, DOA4, DOA3, DOA2, DOA1, DOA0,
    input DIB17, DIB16, DIB15, DIB14, DIB13, DIB12, DIB11, DIB10, DIB9, DIB8, DIB7, DIB6, DIB5, DIB4, DIB3, DIB2, DIB1, DIB0,
    input ADB13, ADB12, ADB11, ADB10, ADB9, ADB8, ADB7, ADB6, ADB5, ADB4, ADB3, ADB2, ADB1, ADB0,
    input CEB, OCEB, CLKB, WEB, RSTB, CSB2, CSB1, CSB0,
    output DOB17, DOB16, DOB15, DOB14, DOB13, DOB12, DOB11, DOB10, DOB9, DOB8, DOB7, DOB6, DOB5, DOB4, DOB3, DOB2, DOB1, DOB0
);
    localparam W = DATA_WIDTH_B;
    // log2 of the words' address step: 16384 / depth (x9, x18, x36: 8, 16, 32 bits a word).
    localparam LSB = W == 1 ? 0 : W == 2 ? 1 : W == 4 ? 2 : W == 9 ? 3 : W == 18 ? 4 : 5;
    localparam LANES = W == 36 ? 4 : W == 18 ? 2 : 1;
    initial begin
        if (DATA_WIDTH_A != W || !(W == 1 || W == 2 || W == 4 || W == 9 || W == 18 || W == 36)
            || REGMODE_A != "NOREG" || REGMODE_B != "OUTREG" || RESETMODE != "SYNC"
            || CSDECODE_A != "0b000" || CSDECODE_B != "0b000")
            $fatal(1, "DP16KD model: only port A writing and port B reading through OUTREG");
    end
    wire [13:0] ada = {ADA13, ADA12, ADA11, ADA10, ADA9, ADA8, ADA7, ADA6, ADA5, ADA4, ADA3, ADA2, ADA1, ADA0};
    wire [13:0] adb = {ADB13, ADB12, ADB11, ADB10, ADB9, ADB8, ADB7, ADB6, ADB5, ADB4, ADB3, ADB2, ADB1, ADB0};
    wire [35:0] di = {DIB17, DIB16, DIB15, DIB14, DIB13, DIB12, DIB11, DIB10, DIB9, DIB8, DIB7, DIB6, DIB5, DIB4, DIB3, DIB2, DIB1, DIB0,
                      DIA17, DIA16, DIA15, DIA14, DIA13, DIA12, DIA11, DIA10, DIA9, DIA8, DIA7, DIA6, DIA5, DIA4, DIA3, DIA2, DIA1, DIA0};
    wire [3:0] be = LANES == 1 ? 4'b0001 : ada[3:0];
    wire [13:0] wa = ada >> LSB;
    wire [13:0] ra = adb >> LSB;
    reg [W-1:0] mem [0:(16384 >> LSB) - 1];
    reg [W-1:0] latch, out;
    integer lane;
    always @(posedge CLKA)
        if (CEA && WEA && !{CSA2, CSA1, CSA0})
            for (lane = 0; lane < LANES; lane = lane + 1)
                if (be[lane]) mem[wa][(W / LANES) * lane +: W / LANES] <= di[(W / LANES) * lane +: W / LANES];
    always @(posedge CLKB) begin
        if (CEB && !{CSB2, CSB1, CSB0}) latch <= mem[ra];
        if (OCEB) out <= latch;
        if (RSTA || RSTB) $fatal(1, "DP16KD model: resets are not modelled");
    end
    wire [35:0] do36 = out;
    assign {DOB17, DOB16, DOB15, DOB14, DOB13, DOB12, DOB11, DOB10, DOB9, DOB8, DOB7, DOB6, DOB5, DOB4, DOB3, DOB2, DOB1, DOB0}
        = W == 36 ? do36[35:18] : do36[17:0];
    assign {DOA17, DOA16, DOA15, DOA14, DOA13, DOA12, DOA11, DOA10, DOA9, DOA8, DOA7, DOA6, DOA5, DOA4, DOA3, DOA2, DOA1, DOA0}
        = W == 36 ? do36[17:0] : 18'd0;
endmodule
