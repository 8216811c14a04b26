// Behavioural model of the Lattice ECP5 DP16KD in the one configuration `rtl_gen.bram`
// instantiates: 512 x 36 pseudo dual-port (port A writes, port B reads), byte enables on
// ADA0..3 (four 9-bit lanes), the word address on AD*5..13, output registers on
// (REGMODE OUTREG), both ports on one clock. Data halves as Yosys' own ECP5 map wires an
// inferred 36-bit memory: DI[17:0] on DIA, DI[35:18] on DIB, DO[17:0] on DOA, DO[35:18] on
// DOB. Any other parameter stops the simulation: this models the wiring, not the primitive.
// (Yosys' cells_sim_ecp5.v has DP16KD as a blackbox only.)
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
    initial begin
        if (DATA_WIDTH_A != 36 || DATA_WIDTH_B != 36 || REGMODE_A != "OUTREG"
            || REGMODE_B != "OUTREG" || CSDECODE_A != "0b000" || CSDECODE_B != "0b000")
            $fatal(1, "DP16KD model: only the 36-bit pseudo dual-port mode with OUTREG");
    end
    wire [35:0] di = {DIB17, DIB16, DIB15, DIB14, DIB13, DIB12, DIB11, DIB10, DIB9, DIB8, DIB7, DIB6, DIB5, DIB4, DIB3, DIB2, DIB1, DIB0,
                      DIA17, DIA16, DIA15, DIA14, DIA13, DIA12, DIA11, DIA10, DIA9, DIA8, DIA7, DIA6, DIA5, DIA4, DIA3, DIA2, DIA1, DIA0};
    wire [3:0] be = {ADA3, ADA2, ADA1, ADA0};
    wire [8:0] wa = {ADA13, ADA12, ADA11, ADA10, ADA9, ADA8, ADA7, ADA6, ADA5};
    wire [8:0] ra = {ADB13, ADB12, ADB11, ADB10, ADB9, ADB8, ADB7, ADB6, ADB5};
    reg [35:0] mem [0:511];
    reg [35:0] latch, out;
    integer lane;
    always @(posedge CLKA)
        if (CEA && WEA && !{CSA2, CSA1, CSA0})
            for (lane = 0; lane < 4; lane = lane + 1)
                if (be[lane]) mem[wa][9 * lane +: 9] <= di[9 * lane +: 9];
    always @(posedge CLKB) begin
        if (CEB && !{CSB2, CSB1, CSB0}) latch <= mem[ra];
        if (OCEB) out <= RSTB ? 36'd0 : latch;
    end
    assign {DOB17, DOB16, DOB15, DOB14, DOB13, DOB12, DOB11, DOB10, DOB9, DOB8, DOB7, DOB6, DOB5, DOB4, DOB3, DOB2, DOB1, DOB0,
            DOA17, DOA16, DOA15, DOA14, DOA13, DOA12, DOA11, DOA10, DOA9, DOA8, DOA7, DOA6, DOA5, DOA4, DOA3, DOA2, DOA1, DOA0} = out;
endmodule
