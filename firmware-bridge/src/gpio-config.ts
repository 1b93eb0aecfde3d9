// Settings of the `gpio` firmware-bridge backend (the Raspberry Pi field-test rig), in the style of
// src/config/schema.ts so the agent can nest it under its own schema and document it.
import { z } from 'zod';
import { TRIGGER_SOURCE_PATTERN } from './interface.ts';

// Line offsets are per chip; 0..1023 covers every SoC gpiochip seen on Pi-class boards.
const line = (description: string) => z.number().int().min(0).max(1023).meta({ description });
const bias = z.enum(['pull-up', 'pull-down', 'disable']);

/** A trigger input line: a holster sensor, the Taser's arming line, the light bar's relay, ... */
const triggerInputSchema = z.strictObject({
  line: line('Line offset of the input.'),
  source: z
    .string()
    .regex(TRIGGER_SOURCE_PATTERN, 'a source name: lower-case letters, digits and -, e.g. holster')
    .meta({ description: 'The trigger source it reports (holster, taser, lightbar, ...): what it does is officer.triggers.' }),
  activeLow: z.boolean().optional().meta({ description: 'Active when pulled to ground. Default: buttonActiveLow.' }),
  bias: bias.optional().meta({ description: 'Bias from the SoC. Default: buttonBias.' }),
});

export const gpioConfigSchema = z
  .strictObject({
    chip: z
      .string()
      .regex(/^[^\s/]+$|^\/dev\/[^\s]+$/, 'a chip name (gpiochip0), number (0) or /dev path')
      .default('gpiochip0')
      .meta({ description: 'GPIO character device holding every line below: name, number or /dev path (see `gpiodetect`).' }),
    recordButtonLine: line('Line offset of the record button (BCM numbering on a Pi).').default(17),
    functionButtonLine: line('Line offset of the function button; none when unset.').optional(),
    buttonActiveLow: z
      .boolean()
      .default(true)
      .meta({ description: 'Buttons pull the line to ground when pressed (the usual wiring with a pull-up).' }),
    buttonBias: bias
      .optional()
      .meta({ description: 'Bias the button lines from the SoC (kernel 5.5+); left as-is when unset, for boards with external resistors.' }),
    debounceMs: z
      .number()
      .int()
      .min(0)
      .max(1000)
      .default(30)
      .meta({ description: 'Edges closer than this to the last accepted edge are contact bounce and ignored.', unit: 'ms' }),
    longPressMs: z
      .number()
      .int()
      .min(100)
      .max(60_000)
      .default(1500)
      .meta({ description: 'Holding a button this long is a long press, reported when the time passes (the function button: when let go, see holdMs).', unit: 'ms' }),
    doublePressMs: z
      .number()
      .int()
      .min(100)
      .max(2000)
      .default(400)
      .meta({
        description:
          'The function button pressed again within this time of letting it go is a double press (one `double`, not two presses); so a single short press of it is reported this long after it is let go.',
        unit: 'ms',
      }),
    holdMs: z
      .number()
      .int()
      .min(200)
      .max(60_000)
      .default(3000)
      .meta({
        description:
          'Holding the function button this long is a hold, reported when the time passes; let go between longPressMs and this, it is a long press. Must be more than longPressMs.',
        unit: 'ms',
      }),
    inputs: z
      .array(triggerInputSchema)
      .max(32)
      .default([])
      .meta({
        description:
          'Trigger input lines, e.g. `[{line: 5, source: holster}]` (keys line, source, activeLow, bias): each change to active (debounced like the buttons) reports a trigger from that source; an input already active at start reports nothing until it is next activated.',
      }),
    fallLine: line('Line offset of a fall detector output (an accelerometer interrupt): its change to active reports a fall; none when unset.').optional(),
    fallActiveLow: z.boolean().optional().meta({ description: 'The fall line is active when low. Default: buttonActiveLow.' }),
    recordLedLine: line('Line offset of the recording LED.').default(27),
    streamLedLine: line('Line offset of the streaming LED.').default(22),
    faultLedLine: line('Line offset of the fault LED; none when unset.').optional(),
    buzzerLine: line('Line offset of the (active, self-oscillating) buzzer.').default(23),
    vibrationLine: line('Line offset of the vibration motor driver.').default(24),
    toolsDir: z
      .string()
      .min(1)
      .optional()
      .meta({ description: 'Folder holding the libgpiod v1 tools (gpioset, gpiomon). Default: found on PATH.' }),
  })
  .superRefine((c, ctx) => {
    if (c.holdMs <= c.longPressMs) {
      ctx.addIssue({ code: 'custom', path: ['holdMs'], message: `holdMs (${c.holdMs}) must be more than longPressMs (${c.longPressMs})` });
    }
  })
  .prefault({});

export type GpioConfig = z.infer<typeof gpioConfigSchema>;
export type GpioConfigInput = z.input<typeof gpioConfigSchema>;
