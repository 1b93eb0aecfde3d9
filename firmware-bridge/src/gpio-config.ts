// Settings of the `gpio` firmware-bridge backend (the Raspberry Pi field-test rig), in the style of
// src/config/schema.ts so the agent can nest it under its own schema and document it.
import { z } from 'zod';

// Line offsets are per chip; 0..1023 covers every SoC gpiochip seen on Pi-class boards.
const line = (description: string) => z.number().int().min(0).max(1023).meta({ description });

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
    buttonBias: z
      .enum(['pull-up', 'pull-down', 'disable'])
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
      .meta({ description: 'Holding a button this long is a long press, reported when the time passes.', unit: 'ms' }),
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
  .prefault({});

export type GpioConfig = z.infer<typeof gpioConfigSchema>;
export type GpioConfigInput = z.input<typeof gpioConfigSchema>;
