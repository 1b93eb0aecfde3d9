// A V4L2 control set on a file descriptor the capture worker's GStreamer already holds: the Pi's
// hardware encoder (v4l2h264enc on /dev/video11, bcm2835-codec) takes `video_bitrate` while it runs.
//
// Why an ioctl on the encoder's own descriptor, and not `v4l2-ctl -d /dev/video11 --set-ctrl`:
// /dev/video11 is a memory-to-memory device, and such drivers (bcm2835-codec as vim2m, vicodec,
// cedrus...) make a new context, with its own control handler, for every open(). v4l2-ctl opens the
// device afresh, so it would set the bitrate of its own, empty context and leave the running encoder
// as it was (and `--get-ctrl` from a shell reads that new context's default, 10 Mbit/s, whatever the
// encoder does). Only VIDIOC_S_CTRL on the descriptor the element opened reaches the encoder; GStreamer
// exposes it as v4l2h264enc's read-only `device-fd` property, and it is valid in the worker only.
// GStreamer's own way, setting `extra-controls` (a GstStructure), is what gstreamer-superficial cannot
// do. Node has no ioctl, so it goes through koffi, the FFI library the agent already ships (prebuilt for
// linux-arm64) for adjtimex; no addon of our own to build and cross-compile.
import { createRequire } from 'node:module';

/** struct v4l2_control { __u32 id; __s32 value; } (include/uapi/linux/videodev2.h). */
const controlSize = 8;
// _IOWR('V', 27 / 28, struct v4l2_control): dir 3 << 30 | size 8 << 16 | 'V' << 8 | nr.
export const VIDIOC_G_CTRL = 0xc008561b;
export const VIDIOC_S_CTRL = 0xc008561c;
/** V4L2_CID_CODEC_BASE (0x990900) + 207, bits per second (v4l2-ctl's `video_bitrate`). */
export const V4L2_CID_MPEG_VIDEO_BITRATE = 0x009909cf;

/** ioctl(fd, request, arg) as libc has it: the result and errno. */
export type IoctlCall = (fd: number, request: number, arg: Buffer) => { result: number; errno: number };

/** What a failed control call names: the device, the control, the errno and what it means here. */
export class V4l2ControlError extends Error {
  readonly errno: number;
  constructor(message: string, errno: number) {
    super(message);
    this.name = 'V4l2ControlError';
    this.errno = errno;
  }
}

let koffiIoctl: IoctlCall | undefined;

/**
 * libc's ioctl through koffi, found in the process's global scope (dlopen(NULL)), as a C program
 * linking libc would find it. Declared variadic, as it is: arm64 and x86-64 pass a variadic
 * pointer like any other, but the declaration should not rely on that.
 */
export function loadIoctl(): IoctlCall {
  if (koffiIoctl) return koffiIoctl;
  const koffi = createRequire(import.meta.url)('koffi') as typeof import('koffi');
  const ioctl = koffi.load(null as unknown as string).func('int ioctl(int fd, unsigned long request, ...)');
  koffiIoctl = (fd, request, arg) => {
    const result = ioctl(fd, request, 'void *', arg) as number;
    return { result, errno: result < 0 ? koffi.errno() : 0 };
  };
  return koffiIoctl;
}

const errnoNames: Record<number, string> = {
  1: 'EPERM',
  5: 'EIO',
  9: 'EBADF',
  13: 'EACCES',
  14: 'EFAULT',
  16: 'EBUSY',
  22: 'EINVAL',
  25: 'ENOTTY',
  34: 'ERANGE',
  38: 'ENOSYS',
};

function explain(errno: number): string {
  const name = errnoNames[errno] ?? `errno ${errno}`;
  switch (errno) {
    case 25:
      return `${name}: not a V4L2 device`;
    case 22:
      return `${name}: the device has no such control`;
    case 34:
      return `${name}: the value is out of the control's range`;
    case 16:
      return `${name}: the control cannot change now`;
    case 9:
      return `${name}: the descriptor is not open`;
    case 38:
      return `${name}: this kernel (or emulator: qemu-user does not pass V4L2 ioctls) does not take the call`;
    default:
      return name;
  }
}

/** Sets and reads back one control on an open V4L2 descriptor. */
export class V4l2Control {
  readonly #ioctl: IoctlCall;
  readonly #buf = Buffer.alloc(controlSize);

  constructor(ioctl: IoctlCall = loadIoctl()) {
    this.#ioctl = ioctl;
  }

  /** VIDIOC_S_CTRL; the driver may clamp or round, so callers read it back with get(). */
  set(fd: number, device: string, id: number, value: number): void {
    this.#buf.writeUInt32LE(id, 0);
    this.#buf.writeInt32LE(value, 4);
    const { result, errno } = this.#ioctl(fd, VIDIOC_S_CTRL, this.#buf);
    if (result < 0) throw new V4l2ControlError(`VIDIOC_S_CTRL ${controlName(id)}=${value} on ${device} (fd ${fd}): ${explain(errno)}`, errno);
  }

  /** VIDIOC_G_CTRL on the same descriptor (the same context as the encoder's). */
  get(fd: number, device: string, id: number): number {
    this.#buf.writeUInt32LE(id, 0);
    this.#buf.writeInt32LE(0, 4);
    const { result, errno } = this.#ioctl(fd, VIDIOC_G_CTRL, this.#buf);
    if (result < 0) throw new V4l2ControlError(`VIDIOC_G_CTRL ${controlName(id)} on ${device} (fd ${fd}): ${explain(errno)}`, errno);
    return this.#buf.readInt32LE(4);
  }
}

function controlName(id: number): string {
  return id === V4L2_CID_MPEG_VIDEO_BITRATE ? 'video_bitrate' : `0x${id.toString(16)}`;
}
