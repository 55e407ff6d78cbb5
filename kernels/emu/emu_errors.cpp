// emu_errors.cpp — cudaGetErrorName/cudaGetErrorString for the CPU emulator: every code of
// CUDA 13's cudaError enum by name, the usual message for those the emulator returns.
#include <cuda_runtime_api.h>

namespace {
struct entry {
    cudaError_t code;
    const char *name, *text;
};
#define E(n) {n, #n, nullptr}
#define T(n, t) {n, #n, t}
const entry table[] = {
    T(cudaSuccess, "no error"),
    T(cudaErrorInvalidValue, "invalid argument"),
    T(cudaErrorMemoryAllocation, "out of memory"),
    T(cudaErrorInitializationError, "initialization error"),
    E(cudaErrorCudartUnloading),
    E(cudaErrorProfilerDisabled),
    E(cudaErrorProfilerNotInitialized),
    E(cudaErrorProfilerAlreadyStarted),
    E(cudaErrorProfilerAlreadyStopped),
    T(cudaErrorInvalidConfiguration, "invalid configuration argument"),
    E(cudaErrorInvalidPitchValue),
    E(cudaErrorInvalidSymbol),
    E(cudaErrorInvalidHostPointer),
    E(cudaErrorInvalidDevicePointer),
    E(cudaErrorInvalidTexture),
    E(cudaErrorInvalidTextureBinding),
    E(cudaErrorInvalidChannelDescriptor),
    T(cudaErrorInvalidMemcpyDirection, "invalid copy direction for memcpy"),
    E(cudaErrorAddressOfConstant),
    E(cudaErrorTextureFetchFailed),
    E(cudaErrorTextureNotBound),
    E(cudaErrorSynchronizationError),
    E(cudaErrorInvalidFilterSetting),
    E(cudaErrorInvalidNormSetting),
    E(cudaErrorMixedDeviceExecution),
    E(cudaErrorNotYetImplemented),
    E(cudaErrorMemoryValueTooLarge),
    E(cudaErrorStubLibrary),
    E(cudaErrorInsufficientDriver),
    E(cudaErrorCallRequiresNewerDriver),
    E(cudaErrorInvalidSurface),
    E(cudaErrorDuplicateVariableName),
    E(cudaErrorDuplicateTextureName),
    E(cudaErrorDuplicateSurfaceName),
    E(cudaErrorDevicesUnavailable),
    E(cudaErrorIncompatibleDriverContext),
    E(cudaErrorMissingConfiguration),
    E(cudaErrorPriorLaunchFailure),
    E(cudaErrorLaunchMaxDepthExceeded),
    E(cudaErrorLaunchFileScopedTex),
    E(cudaErrorLaunchFileScopedSurf),
    E(cudaErrorSyncDepthExceeded),
    E(cudaErrorLaunchPendingCountExceeded),
    T(cudaErrorInvalidDeviceFunction, "invalid device function"),
    T(cudaErrorNoDevice, "no CUDA-capable device is detected"),
    T(cudaErrorInvalidDevice, "invalid device ordinal"),
    E(cudaErrorDeviceNotLicensed),
    E(cudaErrorSoftwareValidityNotEstablished),
    E(cudaErrorStartupFailure),
    E(cudaErrorInvalidKernelImage),
    E(cudaErrorDeviceUninitialized),
    E(cudaErrorMapBufferObjectFailed),
    E(cudaErrorUnmapBufferObjectFailed),
    E(cudaErrorArrayIsMapped),
    E(cudaErrorAlreadyMapped),
    E(cudaErrorNoKernelImageForDevice),
    E(cudaErrorAlreadyAcquired),
    E(cudaErrorNotMapped),
    E(cudaErrorNotMappedAsArray),
    E(cudaErrorNotMappedAsPointer),
    E(cudaErrorECCUncorrectable),
    E(cudaErrorUnsupportedLimit),
    E(cudaErrorDeviceAlreadyInUse),
    E(cudaErrorPeerAccessUnsupported),
    E(cudaErrorInvalidPtx),
    E(cudaErrorInvalidGraphicsContext),
    E(cudaErrorNvlinkUncorrectable),
    E(cudaErrorJitCompilerNotFound),
    E(cudaErrorUnsupportedPtxVersion),
    E(cudaErrorJitCompilationDisabled),
    E(cudaErrorUnsupportedExecAffinity),
    E(cudaErrorUnsupportedDevSideSync),
    E(cudaErrorContained),
    E(cudaErrorInvalidSource),
    E(cudaErrorFileNotFound),
    E(cudaErrorSharedObjectSymbolNotFound),
    E(cudaErrorSharedObjectInitFailed),
    E(cudaErrorOperatingSystem),
    T(cudaErrorInvalidResourceHandle, "invalid resource handle"),
    T(cudaErrorIllegalState, "the operation cannot be performed in the present state"),
    E(cudaErrorLossyQuery),
    E(cudaErrorSymbolNotFound),
    T(cudaErrorNotReady, "device not ready"),
    T(cudaErrorIllegalAddress, "an illegal memory access was encountered"),
    T(cudaErrorLaunchOutOfResources, "too many resources requested for launch"),
    T(cudaErrorLaunchTimeout, "the launch timed out and was terminated"),
    E(cudaErrorLaunchIncompatibleTexturing),
    E(cudaErrorPeerAccessAlreadyEnabled),
    E(cudaErrorPeerAccessNotEnabled),
    E(cudaErrorSetOnActiveProcess),
    E(cudaErrorContextIsDestroyed),
    E(cudaErrorAssert),
    E(cudaErrorTooManyPeers),
    E(cudaErrorHostMemoryAlreadyRegistered),
    E(cudaErrorHostMemoryNotRegistered),
    E(cudaErrorHardwareStackError),
    T(cudaErrorIllegalInstruction, "an illegal instruction was encountered"),
    T(cudaErrorMisalignedAddress, "misaligned address"),
    E(cudaErrorInvalidAddressSpace),
    E(cudaErrorInvalidPc),
    T(cudaErrorLaunchFailure, "unspecified launch failure"),
    E(cudaErrorCooperativeLaunchTooLarge),
    E(cudaErrorTensorMemoryLeak),
    E(cudaErrorNotPermitted),
    T(cudaErrorNotSupported, "operation not supported"),
    E(cudaErrorSystemNotReady),
    E(cudaErrorSystemDriverMismatch),
    E(cudaErrorCompatNotSupportedOnDevice),
    E(cudaErrorMpsConnectionFailed),
    E(cudaErrorMpsRpcFailure),
    E(cudaErrorMpsServerNotReady),
    E(cudaErrorMpsMaxClientsReached),
    E(cudaErrorMpsMaxConnectionsReached),
    E(cudaErrorMpsClientTerminated),
    E(cudaErrorCdpNotSupported),
    E(cudaErrorCdpVersionMismatch),
    T(cudaErrorStreamCaptureUnsupported, "operation not permitted when stream is capturing"),
    T(cudaErrorStreamCaptureInvalidated, "operation failed due to a previous error during capture"),
    E(cudaErrorStreamCaptureMerge),
    T(cudaErrorStreamCaptureUnmatched, "capture was not initiated in this stream"),
    E(cudaErrorStreamCaptureUnjoined),
    E(cudaErrorStreamCaptureIsolation),
    T(cudaErrorStreamCaptureImplicit,
      "operation would make the legacy stream depend on a capturing blocking stream"),
    E(cudaErrorCapturedEvent),
    T(cudaErrorStreamCaptureWrongThread,
      "attempt to terminate a thread-local capture sequence from another thread"),
    E(cudaErrorTimeout),
    T(cudaErrorGraphExecUpdateFailure,
      "the graph update was not performed because it included changes which violated constraints specific to instantiated graph update"),
    E(cudaErrorExternalDevice),
    E(cudaErrorInvalidClusterSize),
    E(cudaErrorFunctionNotLoaded),
    E(cudaErrorInvalidResourceType),
    E(cudaErrorInvalidResourceConfiguration),
    T(cudaErrorUnknown, "unknown error"),
};
#undef E
#undef T

const entry *find(cudaError_t e)
{
    for (const entry &x : table)
        if (x.code == e)
            return &x;
    return nullptr;
}
} // namespace

extern "C" const char *cudaGetErrorName(cudaError_t e)
{
    const entry *x = find(e);
    return x ? x->name : "cudaErrorUnknown";
}

extern "C" const char *cudaGetErrorString(cudaError_t e)
{
    const entry *x = find(e);
    if (!x)
        return "unrecognized error code";
    return x->text ? x->text : x->name;
}
