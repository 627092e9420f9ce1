// FaceCloak on-device mask application for Android: ONNX Runtime (Mobile) + ML Kit face landmarks.
// Reference snippet, NOT built or run in this repository (no Android toolchain here); the same logic
// is exercised in Python by facecloak.clients.ondevice_reference and tests/test_ondevice_*.py.
// Model: facecloak_addclip_112.onnx from `facecloak-export ondevice` (inputs roi u8 NHWC, mask, matrix, budget).
// LiteRT alternative: the .tflite works on fixed 256x256 ROI tiles through three signatures: "sample"
// per tile (window = tx, ty, W, H; sum the (3, S, S) outputs), "budget" once (-> clipped mask), then
// "addclip" per tile with the matrix translation shifted by M·(tx, ty) (ondevice_reference.run_tiled).
// Spec of the mask file: docs/mask-format.md. Never log or upload the mask: it is the user's secret.
package com.facecloak.ondevice

import ai.onnxruntime.OnnxTensor
import ai.onnxruntime.OrtEnvironment
import ai.onnxruntime.OrtSession
import com.google.mlkit.vision.face.Face
import com.google.mlkit.vision.face.FaceLandmark
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.nio.FloatBuffer
import java.util.zip.CRC32
import java.util.zip.Inflater
import kotlin.math.ceil
import kotlin.math.floor

class BadMaskException(msg: String) : Exception(msg)
class BadLandmarksException(msg: String) : Exception(msg)

/** [budget]: the op's budget input (eps * 255, floor, contrast); (255, 1, 1) = no budget (versions 1 and 2). */
class DeviceMask(val side: Int, val values: FloatArray, val points: Array<DoubleArray>, val budget: FloatArray)

private val T112 = arrayOf(
    doubleArrayOf(38.2946, 51.6963), doubleArrayOf(73.5318, 51.5014), doubleArrayOf(56.0252, 71.7366),
    doubleArrayOf(41.5493, 92.3655), doubleArrayOf(70.7299, 92.2041),
)

/** Parse a mask file that may hold a set (version 4, docs/mask-format.md "Version 4"); a single mask is a set of one. */
fun loadMaskSet(bytes: ByteArray, expectedSide: Int = 112): List<DeviceMask> {
    val b = ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN)
    if (bytes.size < 6 || String(bytes, 0, 4, Charsets.US_ASCII) != "FCMK" || (b.getShort(4).toInt() and 0xFFFF) != 4) {
        return listOf(loadMask(bytes, expectedSide))
    }
    if (bytes.size < 12) throw BadMaskException("mask set is truncated")
    val count = b.getShort(6).toInt() and 0xFFFF
    if (count !in 2..16) throw BadMaskException("mask set claims $count members")
    val crc = CRC32().apply { update(bytes, 0, 8); update(bytes, 12, bytes.size - 12) }
    if (crc.value != (b.getInt(8).toLong() and 0xFFFFFFFFL)) throw BadMaskException("mask set is corrupted (checksum mismatch)")
    val members = ArrayList<DeviceMask>(count)
    var at = 12
    repeat(count) {
        if (at + 4 > bytes.size) throw BadMaskException("mask set is truncated")
        val length = b.getInt(at).toLong() and 0xFFFFFFFFL
        at += 4
        if (length > bytes.size - at) throw BadMaskException("mask set is truncated")
        members.add(loadMask(bytes.copyOfRange(at, at + length.toInt()), expectedSide))
        at += length.toInt()
    }
    if (at != bytes.size) throw BadMaskException("mask set has bytes after its last member")
    return members
}

/** One member per photo, uniformly at random: cloaked photos then do not all carry the same pattern. */
fun pickMember(set: List<DeviceMask>): DeviceMask = set[kotlin.random.Random.nextInt(set.size)]

/** Parse and verify a .fcmask (docs/mask-format.md, "Reading, in order"). */
fun loadMask(bytes: ByteArray, expectedSide: Int = 112): DeviceMask {
    if (bytes.size < 29 || String(bytes, 0, 4, Charsets.US_ASCII) != "FCMK") throw BadMaskException("not a FaceCloak mask")
    val b = ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN)
    val version = b.getShort(4).toInt() and 0xFFFF
    if (version !in 1..3) throw BadMaskException("mask format version $version is not supported")
    val header = b.getShort(6).toInt() and 0xFFFF
    val side = b.getShort(8).toInt() and 0xFFFF
    val n = bytes[28].toInt() and 0xFF
    val extra = if (version == 3) 13 else 0  // version 3: the perceptual block (rule, eps, floor, contrast)
    if (header != 29 + n + extra || bytes[10].toInt() != 3 || side !in 8..1024) throw BadMaskException("header corrupted")
    if (bytes[11].toInt() != 1) throw BadMaskException("unknown template")
    if (side != expectedSide) throw BadMaskException("mask is $side px, the op expects $expectedSide px")
    val scale = b.getFloat(12).toDouble()
    val quantum = b.getFloat(16)
    val grey = quantum * 255f  // version 1 kept its loose quantum bound; version 2 allows 0.5..4 grey levels
    val quantumOk = if (version == 1) quantum > 0f && quantum <= 1f else grey in 0.4999f..4.0001f
    if (!scale.isFinite() || scale !in 0.25..4.0 || !quantum.isFinite() || !quantumOk) throw BadMaskException("header corrupted")
    val size = b.getInt(20).toLong() and 0xFFFFFFFFL
    val crc = b.getInt(24).toLong() and 0xFFFFFFFFL
    if ((bytes.size - header).toLong() != size) throw BadMaskException("mask is truncated or padded")
    // Version 2 checksums every byte but the CRC field itself; version 1 only the payload.
    val crc32 = CRC32().apply { if (version == 1) update(bytes, header, size.toInt()) else { update(bytes, 0, 24); update(bytes, 28, bytes.size - 28) } }
    if (crc32.value != crc) throw BadMaskException("mask is corrupted (checksum mismatch)")
    val budget = floatArrayOf(255f, 1f, 1f)  // no budget: the op allows 255 everywhere (a no-op clip)
    if (version == 3) {
        val at = 29 + n
        val rule = bytes[at].toInt() and 0xFF
        if (rule != 1) throw BadMaskException("mask uses unknown perceptual budget rule $rule")
        val eps = b.getFloat(at + 1); val flat = b.getFloat(at + 5); val contrast = b.getFloat(at + 9)  // flat: "floor"
        if (!eps.isFinite() || !flat.isFinite() || !contrast.isFinite()) throw BadMaskException("mask perceptual budget is not finite")
        if (eps <= 0f || eps * 255f > 64f + 1e-3f || flat !in 0f..1f || contrast <= 0f || contrast > 1f)
            throw BadMaskException("mask perceptual budget is out of range")
        budget[0] = eps * 255f; budget[1] = flat; budget[2] = contrast
    }
    val n3 = side * side * 3
    if (version >= 2 && size > n3 + (n3 shr 12) + (n3 shr 14) + (n3 shr 25) + 13) throw BadMaskException("payload too large")
    val raw = ByteArray(n3 + 1)  // one spare byte: a payload inflating to more is refused, never inflated further
    val inflater = Inflater().apply { setInput(bytes, header, size.toInt()) }   // zlib stream as is
    val got = try { inflater.inflate(raw).also { if (!inflater.finished()) throw BadMaskException("mask payload cannot be decoded") } } finally { inflater.end() }
    if (got != n3) throw BadMaskException("mask payload cannot be decoded")
    val peak = (0 until n3).maxOf { kotlin.math.abs(raw[it].toInt()) }
    if (version >= 2 && (peak > 127 || peak * grey > 64f + grey / 2f + 1e-3f)) throw BadMaskException("mask amplitude exceeds the largest budget")
    val values = FloatArray(n3) { raw[it] * grey }                                // int8 levels -> 0..255 scale
    val points = Array(5) { i -> DoubleArray(2) { k -> ((T112[i][k] - 56.0) / scale + 56.0) * side / 112.0 } }
    return DeviceMask(side, values, points, budget)
}

/** ML Kit landmarks in template order (image-left first: the subject's RIGHT eye and mouth corner). */
fun fivePoints(face: Face): Array<DoubleArray>? {
    val types = intArrayOf(FaceLandmark.RIGHT_EYE, FaceLandmark.LEFT_EYE, FaceLandmark.NOSE_BASE,
                           FaceLandmark.MOUTH_RIGHT, FaceLandmark.MOUTH_LEFT)
    return Array(5) { i -> face.getLandmark(types[i])?.position?.let { doubleArrayOf(it.x.toDouble(), it.y.toDouble()) } ?: return null }
}

/** Closed-form least-squares similarity src -> dst (equals Umeyama in 2-D): [a, -b, tx, b, a, ty]. */
fun fitSimilarity(src: Array<DoubleArray>, dst: Array<DoubleArray>): DoubleArray {
    if (src.size != 5 || src.any { p -> p.any { !it.isFinite() } }) throw BadLandmarksException("need 5 finite landmarks")
    val msx = src.sumOf { it[0] } / 5; val msy = src.sumOf { it[1] } / 5
    val mdx = dst.sumOf { it[0] } / 5; val mdy = dst.sumOf { it[1] } / 5
    var norm = 0.0; var a = 0.0; var bb = 0.0
    for (i in 0 until 5) {
        val sx = src[i][0] - msx; val sy = src[i][1] - msy; val dx = dst[i][0] - mdx; val dy = dst[i][1] - mdy
        norm += sx * sx + sy * sy; a += sx * dx + sy * dy; bb += sx * dy - sy * dx
    }
    if (norm < 1.0) throw BadLandmarksException("landmarks are degenerate")
    a /= norm; bb /= norm
    return doubleArrayOf(a, -bb, mdx - (a * msx - bb * msy), bb, a, mdy - (bb * msx + a * msy))
}

/** Cloaks one face of an interleaved RGB frame (width*height*3 bytes) in place; false if off-frame. */
class FaceCloakOp(modelBytes: ByteArray) : AutoCloseable {
    private val env = OrtEnvironment.getEnvironment()
    private val session: OrtSession = env.createSession(modelBytes, OrtSession.SessionOptions().apply { setIntraOpNumThreads(1) })

    fun apply(rgb: ByteArray, width: Int, height: Int, mask: DeviceMask, landmarks: Array<DoubleArray>): Boolean {
        val m = fitSimilarity(landmarks, mask.points)                        // frame pixel -> mask pixel
        val det = m[0] * m[4] - m[1] * m[3]
        val s = mask.side.toDouble()
        val xs = ArrayList<Double>(); val ys = ArrayList<Double>()
        for ((cx, cy) in listOf(0.0 to 0.0, s to 0.0, 0.0 to s, s to s)) {  // mask square -> frame (inverse)
            val dx = cx - m[2]; val dy = cy - m[5]
            xs += (m[4] * dx - m[1] * dy) / det; ys += (-m[3] * dx + m[0] * dy) / det
        }
        val x0 = maxOf(floor(xs.min()).toInt(), 0); val y0 = maxOf(floor(ys.min()).toInt(), 0)
        val x1 = minOf(ceil(xs.max()).toInt() + 1, width); val y1 = minOf(ceil(ys.max()).toInt() + 1, height)
        if (x0 >= x1 || y0 >= y1) return false                                // face wholly outside the frame
        val w = x1 - x0; val h = y1 - y0
        val roi = ByteBuffer.allocateDirect(w * h * 3)
        for (y in 0 until h) roi.put(rgb, ((y0 + y) * width + x0) * 3, w * 3)
        roi.rewind()
        val shifted = floatArrayOf(m[0].toFloat(), m[1].toFloat(), (m[2] + m[0] * x0 + m[1] * y0).toFloat(),
                                   m[3].toFloat(), m[4].toFloat(), (m[5] + m[3] * x0 + m[4] * y0).toFloat())
        OnnxTensor.createTensor(env, roi, longArrayOf(1, h.toLong(), w.toLong(), 3), ai.onnxruntime.OnnxJavaType.UINT8).use { r ->
            OnnxTensor.createTensor(env, FloatBuffer.wrap(mask.values), longArrayOf(mask.side.toLong(), mask.side.toLong(), 3)).use { mk ->
                OnnxTensor.createTensor(env, FloatBuffer.wrap(shifted), longArrayOf(2, 3)).use { mt ->
                    OnnxTensor.createTensor(env, FloatBuffer.wrap(mask.budget), longArrayOf(3)).use { bd ->
                        // The model computes the budget from the ROI in the mask's frame, clips the mask, adds it.
                        session.run(mapOf("roi" to r, "mask" to mk, "matrix" to mt, "budget" to bd)).use { out ->
                            val cloaked = (out[0] as OnnxTensor).byteBuffer            // uint8, rounded and clipped
                            for (y in 0 until h) cloaked.get(rgb, ((y0 + y) * width + x0) * 3, w * 3)
                        }
                    }
                }
            }
        }
        return true
    }

    override fun close() = session.close()
}
